import Foundation
import Logging

/// One JSON object per line on stderr: the format of every Clau process's logs and audit events
/// (C-17, R-19). Metadata is flattened into the object; callers never put secrets in metadata.
public struct JSONLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    private let label: String
    private let sink: @Sendable (String) -> Void

    public init(label: String, level: Logger.Level = .info, sink: @escaping @Sendable (String) -> Void = JSONLogHandler.standardError) {
        self.label = label
        self.logLevel = level
        self.sink = sink
    }

    public static let standardError: @Sendable (String) -> Void = { line in
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        var line = "{\"time\":\"\(Self.timestamp())\",\"level\":\"\(event.level)\",\"logger\":"
        Self.appendJSONString(label, to: &line)
        line += ",\"message\":"
        Self.appendJSONString("\(event.message)", to: &line)
        for key in merged.keys.sorted() where !["time", "level", "logger", "message"].contains(key) {
            line += ","
            Self.appendJSONString(key, to: &line)
            line += ":"
            Self.appendJSONString("\(merged[key]!)", to: &line)
        }
        line += "}"
        sink(line)
    }

    private static func timestamp() -> String {
        Date.now.formatted(.iso8601.year().month().day().time(includingFractionalSeconds: true).timeZone(separator: .omitted))
    }

    /// RFC 8259 string escaping; control characters never reach the log raw, so a value cannot
    /// forge a second log line.
    public static func appendJSONString(_ value: String, to out: inout String) {
        out += "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20 || scalar.value == 0x7F || scalar.value == 0x2028 || scalar.value == 0x2029:
                out += String(format: "\\u%04x", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        out += "\""
    }
}

extension LoggingSystem {
    /// Installs JSON lines on stderr for the whole process, once, at start.
    public static func bootstrapJSON(level: Logger.Level = .info) {
        bootstrap { label in JSONLogHandler(label: label, level: level) }
    }
}
