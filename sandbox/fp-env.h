// Floating-point environment of the sandbox's processing thread.
#pragma once

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

#include <cstdint>

namespace sandpipe::sandbox {

/// Flushes denormals to zero for the calling thread (x86: MXCSR FTZ | DAZ; arm64: FPCR.FZ).
/// A decaying IIR tail in denormal range otherwise costs up to 100x per operation.
/// NOTE: this affects all float math on the thread, Python floats included.
inline void flush_denormals() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  constexpr unsigned int ftz = 1u << 15;
  constexpr unsigned int daz = 1u << 6;
  _mm_setcsr(_mm_getcsr() | ftz | daz);
#elif defined(__aarch64__)
  std::uint64_t fpcr = 0;
  asm volatile("mrs %0, fpcr" : "=r"(fpcr));
  fpcr |= std::uint64_t{1} << 24;
  asm volatile("msr fpcr, %0" : : "r"(fpcr));
#endif
}

/// True if denormals are flushed on the calling thread (for tests and the hello log line).
[[nodiscard]] inline bool denormals_flushed() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  return (_mm_getcsr() & 0x8040u) == 0x8040u;
#elif defined(__aarch64__)
  std::uint64_t fpcr = 0;
  asm volatile("mrs %0, fpcr" : "=r"(fpcr));
  return (fpcr & (std::uint64_t{1} << 24)) != 0;
#else
  return false;
#endif
}

}  // namespace sandpipe::sandbox
