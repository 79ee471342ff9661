// The contract between the host and a sandbox zygote (`sandpipe-sandbox --zygote`): fixed-size
// records on a SOCK_SEQPACKET socketpair, one record a datagram. The host is the only writer of
// requests; the zygote validates them anyway (sizes, magic, a terminated path).
#pragma once

#include <cstdint>
#include <type_traits>

namespace sandpipe::schema {

inline constexpr std::uint32_t zygote_magic = 0x5a594732;  // "ZYG2"; bump with any layout change

/// ZygoteForkRequest::edges: which of a relay's edges come with the request.
inline constexpr std::uint32_t zygote_input_edge = 1;
inline constexpr std::uint32_t zygote_output_edge = 2;
inline constexpr std::uint32_t zygote_output_to_host = 4;  ///< --output-to-host 1

/// host → zygote, with two to four descriptors (SCM_RIGHTS): the new sandbox's end of its
/// control socketpair, the memfd of its shared segment, then those of its input and output
/// edges as `edges` says (--input-edge-fd, --output-edge-fd). The zygote forks a sandbox that
/// serves them.
struct ZygoteForkRequest {
  std::uint32_t magic = zygote_magic;
  std::uint32_t edges = 0;           ///< zygote_input_edge | zygote_output_edge | zygote_output_to_host
  std::uint32_t memory_mb = 0;       ///< --memory-mb
  std::uint32_t wake_lead_us = 0;    ///< --wake-lead-us
  std::uint32_t keep_denormals = 0;  ///< --keep-denormals (0 or 1)
  char allow_writes[4096] = {};      ///< --allow-writes DIR (absolute, NUL-terminated; empty: none)
};

/// zygote → host: once after start-up (`pid` 0: ready, or `error` says why it cannot serve, and
/// it exits), then one per request: the sandbox's pid (> 0), or 0 and `error`.
struct ZygoteReply {
  std::uint32_t magic = zygote_magic;
  std::int32_t pid = 0;
  char error[512] = {};
};

static_assert(std::is_trivially_copyable_v<ZygoteForkRequest>);
static_assert(std::is_trivially_copyable_v<ZygoteReply>);

}  // namespace sandpipe::schema
