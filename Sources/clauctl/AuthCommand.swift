import ArgumentParser
import Foundation
import RPC

/// Runbook commands against a running clau-auth (C-19). clauctl must run as a uid that
/// clau-auth lists with --admin-user.
struct AuthCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "auth",
        abstract: "Accounts and signing keys of the auth service (C-19, X-5).",
        subcommands: [CreateAdmin.self, RotateSigningKey.self, RevokeSessions.self, RevokeEverything.self, Unlock.self, BlockIP.self, UnblockIP.self, Audit.self]
    )

    struct Socket: ParsableArguments {
        @Option(help: "The auth service's socket.")
        var socket: String = "/run/clau/auth/auth.sock"
    }

    struct CreateAdmin: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "create-admin",
            abstract: "Create an admin account (there is no default admin). Reads the password from stdin; prints the TOTP enrolment URI once."
        )
        @OptionGroup var socket: Socket
        @Option(help: "E-mail of the admin.") var email: String
        @Option(help: "Full name.") var name: String

        func run() async throws {
            // From stdin, so the password never appears in argv or shell history.
            guard let password = readLine(strippingNewline: true), !password.isEmpty else {
                throw ValidationError("pipe the password on stdin, e.g. `read -rs P; printf '%s\\n' \"$P\" | clauctl auth create-admin ...`")
            }
            var request = AuthCreateAdminRequest()
            request.email = email
            request.fullName = name
            request.password = password
            let response = try await callOnce(socket: socket.socket, AuthAPI.createAdmin, request)
            print("admin \(response.userID) created")
            print("TOTP (add to an authenticator now; shown once): \(response.otpauthUri)")
        }
    }

    struct RotateSigningKey: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rotate-signing-key",
            abstract: "A new JWT signing key signs from now on; older keys verify until their tokens expire (needs clau-auth --signing-key-dir)."
        )
        @OptionGroup var socket: Socket
        @Option(help: "RS256, ES256, EdDSA or HS256 (default: the current key's).") var algorithm: String = ""

        func run() async throws {
            var request = AuthRotateSigningKeyRequest()
            request.algorithm = algorithm
            let response = try await callOnce(socket: socket.socket, AuthAPI.rotateSigningKey, request)
            print("signing key \(response.kid) (\(response.algorithm)); verifying: \(response.verifyingKids.joined(separator: ", "))")
        }
    }

    struct RevokeSessions: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "revoke-sessions", abstract: "Revoke every session and access token of one user.")
        @OptionGroup var socket: Socket
        @Option(help: "The user's id.") var user: String

        func run() async throws {
            var request = AuthRevokeAllSessionsRequest()
            request.userID = user
            request.reason = "operator"
            let response = try await callOnce(socket: socket.socket, AuthAPI.revokeAllSessions, request)
            print("revoked \(response.revokedSessions) sessions")
        }
    }

    struct RevokeEverything: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "revoke-everything", abstract: "Incident response: revoke every session of every user and rotate the signing key.")
        @OptionGroup var socket: Socket
        @Flag(help: "Confirm: every user is logged out.") var yes = false

        func run() async throws {
            guard yes else { throw ValidationError("this logs out every user: add --yes") }
            let response = try await callOnce(socket: socket.socket, AuthAPI.revokeEverything, AuthRevokeEverythingRequest())
            print("revoked \(response.revokedSessions) sessions; new signing key: \(response.newKid.isEmpty ? "(not rotated: keys come from configuration)" : response.newKid)")
        }
    }

    struct Unlock: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "End a user's login lockout.")
        @OptionGroup var socket: Socket
        @Option(help: "The user's id.") var user: String

        func run() async throws {
            var request = AuthAdminUnlockUserRequest()
            request.userID = user
            let response = try await callOnce(socket: socket.socket, AuthAPI.adminUnlockUser, request)
            print(response.wasLocked ? "unlocked" : "was not locked")
        }
    }

    struct BlockIP: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "block-ip", abstract: "Block an IP at every edge.")
        @OptionGroup var socket: Socket
        @Argument var ip: String
        @Option(help: "Seconds.") var duration: Int64 = 86_400
        @Option(help: "A short reason.") var reason: String = "operator"

        func run() async throws {
            var request = AuthBlockIPRequest()
            request.ip = ip
            request.durationSeconds = duration
            request.reason = reason
            _ = try await callOnce(socket: socket.socket, AuthAPI.blockIP, request)
            print("blocked \(ip) for \(duration) s")
        }
    }

    struct UnblockIP: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "unblock-ip", abstract: "Remove an IP from the blocklist.")
        @OptionGroup var socket: Socket
        @Argument var ip: String

        func run() async throws {
            var request = AuthUnblockIPRequest()
            request.ip = ip
            print(try await callOnce(socket: socket.socket, AuthAPI.unblockIP, request).removed ? "unblocked" : "was not blocked")
        }
    }

    struct Audit: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print audit events as JSON lines (R-19).")
        @OptionGroup var socket: Socket
        @Option(help: "Only events after this id.") var after: Int64 = 0
        @Option(help: "At most this many (1-500).") var limit: Int32 = 100

        func run() async throws {
            var request = AuthListAuditEventsRequest()
            request.afterID = after
            request.limit = limit
            for event in try await callOnce(socket: socket.socket, AuthAPI.listAuditEvents, request).events {
                print(try event.jsonString())
            }
        }
    }
}
