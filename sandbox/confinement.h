// What a sandbox may do: resource limits at start, a seccomp filter before the plugin loads.
// The plugin file is the untrusted part: everything below is in place before it is imported.
// docs/reliability.md lists exactly what is allowed and what is refused.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>

namespace sandpipe::sandbox {

struct Limits {
  /// RLIMIT_AS in MiB (0: none). numpy + scipy reserve ~110 MiB of address space here.
  std::uint64_t memory_mb = 0;
};

/// At process start, before the interpreter: PR_SET_NO_NEW_PRIVS, no core dumps, RLIMIT_AS,
/// and (when running as root) every capability dropped. Returns what failed, if anything.
[[nodiscard]] std::optional<std::string> apply_process_limits(const Limits& limits);

/// Installs the seccomp filter (see confinement.cpp for the list). After the interpreter and
/// numpy are initialised (their start-up opens, threads and mappings are done), before the
/// plugin is imported. `self` is this process's pid (signals only to itself). `allow_writes`
/// (config `allow-writes`, for sinks that record) leaves out the file-system rules. Returns what
/// failed, if anything; nullopt also when built without libseccomp (see seccomp_available()).
[[nodiscard]] std::optional<std::string> install_syscall_filter(pid_t self, bool allow_writes = false);

/// False when this sandbox was built without libseccomp (the host logs a warning).
[[nodiscard]] bool seccomp_available() noexcept;

}  // namespace sandpipe::sandbox
