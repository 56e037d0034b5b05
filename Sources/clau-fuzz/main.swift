// clau-fuzz: coverage-guided fuzzing (libFuzzer) of the parsers that read bytes from the network
// or from another process (FuzzTargets.swift).
//
//   scripts/fuzz                      builds with -sanitize=fuzzer,address -D FUZZING and runs
//                                     every target for a bounded number of inputs
//   clau-fuzz TARGET [libFuzzer flags] [corpus dirs]   (fuzzing build)
//   clau-fuzz TARGET FILE...          (plain build) runs each file through TARGET once, e.g. a
//                                     crash input libFuzzer saved
import Foundation

#if FUZZING
import CClauFuzz
#endif

var arguments = CommandLine.arguments
guard arguments.count >= 2, let target = FuzzTargets.all[arguments[1]] else {
    FileHandle.standardError.write(Data("usage: clau-fuzz TARGET [inputs...]; targets: \(FuzzTargets.all.keys.sorted().joined(separator: ", "))\n".utf8))
    exit(2)
}
arguments.remove(at: 1)

#if FUZZING
// The driver calls back from this thread only; a global keeps the C callback capture-free.
nonisolated(unsafe) var selectedTarget = target

/// libFuzzer's usual entry point. Its archive's own `main` refers to it, and the linker may load
/// that object even though SwiftPM's `main` (this file) is the one that runs.
@_cdecl("LLVMFuzzerTestOneInput")
func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    selectedTarget(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}
var argc = Int32(arguments.count)
var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = UnsafeMutablePointer.allocate(capacity: arguments.count + 1)
for (index, argument) in arguments.enumerated() { argv![index] = strdup(argument) }
argv![arguments.count] = nil
exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in fuzzOneInput(data, size) })
#else
for path in arguments.dropFirst() {
    guard let input = FileManager.default.contents(atPath: path) else {
        FileHandle.standardError.write(Data("cannot read \(path)\n".utf8))
        exit(1)
    }
    input.withUnsafeBytes { target($0) }
    print("\(path): ok")
}
#endif
