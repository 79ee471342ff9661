/* Sandpipe native plugin ABI, version 1.
 *
 * A native plugin is a shared object exporting `sandpipe_plugin_entry`. The host dlopens it,
 * asks for descriptors by index and checks `abi_version` and `struct_size` before using one.
 * Plain C so that a plugin can be written in C, C++, Rust or anything that speaks the C ABI.
 *
 * Threads (as in CLAP): [main] calls come from the host's main thread while the instance is
 * not processing; [audio-thread] calls come from the real-time thread and must not allocate,
 * lock, block or make system calls.
 */
#ifndef SANDPIPE_PLUGIN_H
#define SANDPIPE_PLUGIN_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SANDPIPE_PLUGIN_ABI_VERSION 1u

/* Marks the entry point as exported when the plugin is built with -fvisibility=hidden. */
#if defined(__GNUC__) || defined(__clang__)
#define SANDPIPE_PLUGIN_EXPORT __attribute__((visibility("default")))
#else
#define SANDPIPE_PLUGIN_EXPORT
#endif

/* Parameter flags. */
#define SANDPIPE_PARAM_INTEGER 0x1u /* only whole numbers are meaningful */
#define SANDPIPE_PARAM_ENUM 0x2u    /* value is an index into `choices` */
#define SANDPIPE_PARAM_BOOLEAN 0x4u /* 0 or 1 */

typedef struct sandpipe_param_info {
  const char *id;    /* key used in configs and "PLUGIN:PARAM", e.g. "freq" */
  const char *label; /* human readable, e.g. "Cutoff frequency" */
  const char *unit;  /* "Hz", "dB", "ms", "" */
  float min_value;
  float max_value;
  float default_value;
  uint32_t flags;
  const char *const *choices; /* SANDPIPE_PARAM_ENUM: `n_choices` names, value i = choices[i] */
  uint32_t n_choices;
} sandpipe_param_info;

typedef struct sandpipe_instance sandpipe_instance; /* opaque to the host */

typedef struct sandpipe_plugin_descriptor {
  uint32_t abi_version; /* SANDPIPE_PLUGIN_ABI_VERSION the plugin was built against */
  uint32_t struct_size; /* sizeof(sandpipe_plugin_descriptor) as the plugin knows it */
  const char *id;       /* stable, e.g. "gain" */
  const char *name;     /* human readable */
  const char *version;  /* plugin's own version, e.g. "1.0.0" */
  uint32_t n_params;
  const sandpipe_param_info *params;

  /* [main] Creates an instance for a stream; every buffer it needs is allocated here.
   * Parameters start at their defaults; the host then calls set_param for each configured
   * value before the first process. Returns NULL on failure. */
  sandpipe_instance *(*instantiate)(const struct sandpipe_plugin_descriptor *desc, double sample_rate,
                                    uint32_t channels, uint32_t max_frames);

  /* [main] Frees an instance. */
  void (*destroy)(sandpipe_instance *instance);

  /* [audio-thread] Sets a parameter (also called from [main] before the first process). The host
   * never passes a value outside the declared range (a config asking for one is refused), and
   * passes whole numbers for INTEGER, ENUM and BOOLEAN parameters. May be NULL if n_params is 0. */
  void (*set_param)(sandpipe_instance *instance, uint32_t index, float value);

  /* [audio-thread] Processes `frames` (1..max_frames) frames; one pointer per channel.
   * `in` and `out` may be the same buffers (in-place). */
  void (*process)(sandpipe_instance *instance, const float *const *in, float *const *out, uint32_t frames);

  /* [any] Latency the plugin adds, in frames (0 for most). Constant between set_param calls; the
   * host reads it once the configured parameters are applied. NULL means 0. */
  uint32_t (*latency)(const sandpipe_instance *instance);

  /* [main] Clears internal state (filter memories, delay lines) as if freshly instantiated,
   * keeping the current parameter values. NULL if the plugin keeps no state. */
  void (*reset)(sandpipe_instance *instance);
} sandpipe_plugin_descriptor;

/* Entry point: returns descriptor `index` (0, 1, …) or NULL past the last one.
 * `host_abi_version` lets a plugin refuse a host it does not understand.
 * The host uses descriptor 0 of a library given by path; for `builtin:NAME` the one whose id is
 * NAME (descriptor 0 if none is). */
typedef const sandpipe_plugin_descriptor *(*sandpipe_plugin_entry_fn)(uint32_t host_abi_version, uint32_t index);
#define SANDPIPE_PLUGIN_ENTRY_SYMBOL "sandpipe_plugin_entry"

/* What a plugin defines (declared here so that a C++ definition gets C linkage and the right
 * type). The host never calls it directly: it looks it up with dlsym. */
SANDPIPE_PLUGIN_EXPORT const sandpipe_plugin_descriptor *sandpipe_plugin_entry(uint32_t host_abi_version,
                                                                              uint32_t index);

#ifdef __cplusplus
}
#endif

#endif /* SANDPIPE_PLUGIN_H */
