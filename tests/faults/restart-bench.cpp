// Restart time: a plugin that exits on marked blocks, 24 times, spaced so the spare sandbox is
// ready each time (the running case). Prints death → new sandbox handed to the RT side
// (p50/max, ms) and checks that only the marked blocks came out dry. A measurement, not a test.
// `restart-bench scipy` uses scipy_faulty.py instead of faulty.py (the same plugin behind an
// `import scipy.signal`: what a spare's preload of the module saves). `spawn` (after it, or
// alone): every sandbox spawned on its own (sandbox.zygote = false) instead of forked from the
// zygote.
#include <sndfile.h>
#include <stdlib.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "host/config/config.h"
#include "host/chain/render.h"

int main(int argc, char** argv) {
  using namespace sandpipe::host;
  bool scipy = false;
  bool spawn = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg != "scipy" && arg != "spawn") {
      std::fprintf(stderr, "usage: restart-bench [scipy] [spawn]\n");
      return 2;
    }
    (arg == "scipy" ? scipy : spawn) = true;
  }
  const char* fixture = scipy ? "scipy_faulty.py" : "faulty.py";
  constexpr int restarts = 24;
  constexpr int spacing =
      12;  // blocks between faults (× pace 0.1 s: the spare is ready, the 1 s window has no backoff left)
  constexpr std::uint32_t block = 256;
  const std::uint32_t frames = block * spacing * (restarts + 1);
  std::string dir_pattern = (std::filesystem::temp_directory_path() / "sandpipe-restart-XXXXXX").string();
  if (::mkdtemp(dir_pattern.data()) == nullptr) return 1;
  const std::filesystem::path dir = dir_pattern;
  std::vector<float> x(frames, 0.1F);
  for (int k = 1; k <= restarts; ++k) x[std::size_t(k) * spacing * block] = 0.875F;
  SF_INFO info{};
  info.samplerate = 48000;
  info.channels = 1;
  info.format = SF_FORMAT_WAV | SF_FORMAT_FLOAT;
  SNDFILE* f = sf_open((dir / "in.wav").c_str(), SFM_WRITE, &info);
  sf_writef_float(f, x.data(), frames);
  sf_close(f);

  const std::string conf =
      std::string(spawn ? "sandbox.zygote = false\n" : "sandbox.zygote = true\n") +
      "channels = 1\nrestart.max = 1000\nrestart.window-s = 1\nplugins = [ { name = \"f\" mode = \"sync\" "
      "path = \"" +
      (std::filesystem::path(SANDPIPE_FAULT_FIXTURES) / fixture).string() +
      "\" params = { fault = \"exit\" pace = 0.1 } } ]\n";
  RenderOptions options;
  options.block_frames = block;
  options.crossfade_frames = 0;
  options.log = [](std::string_view, SandboxLogLevel, std::string_view) {};
  std::ostringstream summary;
  const auto report =
      render_file(parse_config(conf, "bench.conf", dir), dir / "in.wav", dir / "out.wav", options, summary);
  std::vector<float> y(frames);
  f = sf_open((dir / "out.wav").c_str(), SFM_READ, &info);
  sf_readf_float(f, y.data(), frames);
  sf_close(f);
  std::filesystem::remove_all(dir);
  std::uint64_t dry_blocks = 0;
  std::uint64_t bad = 0;
  for (std::uint32_t b = 0; b < frames / block; ++b) {
    const bool marked = b % spacing == 0 && b > 0;
    bool dry = true;
    bool wet = true;
    for (std::uint32_t i = 0; i < block; ++i) {
      dry = dry && y[b * block + i] == x[b * block + i];
      wet = wet && y[b * block + i] == x[b * block + i] * 0.5F;
    }
    dry_blocks += dry ? 1 : 0;
    bad += (marked ? !dry : !wet) ? 1 : 0;
  }
  std::vector<double> t = report.restart_ms;
  std::sort(t.begin(), t.end());
  const double p50 = t.empty() ? 0 : t[t.size() / 2];
  const double max = t.empty() ? 0 : t.back();
  const nlohmann::ordered_json result = {{"restarts", t.size()},        {"restart_ms_p50", p50},
                                         {"restart_ms_max", max},       {"dry_blocks", dry_blocks},
                                         {"marked_blocks", restarts},   {"blocks_wrong", bad},
                                         {"frames_out", report.frames}, {"frames_in", frames}};
  std::printf("%s\n", result.dump().c_str());
  std::cout << summary.str();
  return (t.size() == restarts && bad == 0 && report.frames == frames) ? 0 : 1;
}
