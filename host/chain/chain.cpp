// Building a chain: native slots in-process, Python slots in sandboxes started together.
#include "host/chain/chain.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <span>
#include <string>

#include "host/python/python-slot.h"
#include "host/python/sandbox-client.h"
#include "host/python/sandbox-instance.h"
#include "host/python/zygote.h"
#include "host/slot/native-plugin.h"

namespace sandpipe::host {

Chain::Chain(const ChainConfig& config, double sample_rate, std::uint32_t max_frames)
    : Chain(config, sample_rate, max_frames, ChainOptions{}) {}

Chain::Chain(const ChainConfig& config, double sample_rate, std::uint32_t max_frames, ChainOptions options)
    : options_(std::move(options)),
      latency_max_ms_(config.latency_max_ms),
      channels_(config.channels),
      max_frames_(max_frames),
      sample_rate_(sample_rate) {
  if (channels_ < 1 || channels_ > max_channels) throw PluginError("chain: channels must be 1..8");
  if (max_frames_ < 1 || max_frames_ > 8192) throw PluginError("chain: max_frames must be 1..8192");
  block_frames_ = options_.block_frames == 0 ? max_frames_ : std::min(options_.block_frames, max_frames_);

  // Python plugins first, all at once, so their interpreters start in parallel while native
  // plugins load; then the slots are laid out in config order. Every segment gets the most
  // slots (16) so any pipeline depth the scheduler picks fits.
  std::vector<PluginSpec> python_specs;
  for (const auto& spec : config.plugins)
    if (spec.kind == PluginKind::python) python_specs.push_back(spec);
  const std::size_t python_count = python_specs.size();
  // An `auto` slot's start-up burst is timed on a stand-in: a second sandbox with the same
  // plugin and params, started with the others and stopped after the burst. The slot's own
  // plugin then meets the first real sample in its initial state (a cipher's keystream, a
  // delay line, a block counter are not advanced by the burst). A plugin that may write files
  // gets none: a second instance could touch them (it then measures while running). The
  // stand-in only imports the module at first (preload): it makes the plugin once the slot's
  // own sandbox has said which API it is, and only for an SDK plugin, whose prepare() has no
  // effects outside it. An earlier-API plugin's initialize()/start()/stop()/shutdown() open
  // files, devices, sessions: they run once, in the slot's own sandbox (docs/architecture.md).
  std::vector<std::size_t> stand_in_of;  // python index → index of its stand-in in python_specs
  if (options_.calibration_blocks > 0) {
    for (std::size_t i = 0; i < python_count; ++i) {
      // A group gets none either: its preload would name one member (it measures while running).
      if (python_specs[i].mode != SlotMode::auto_select || !python_specs[i].allow_writes.empty() ||
          is_group(python_specs[i]))
        continue;
      stand_in_of.resize(python_count, 0);
      stand_in_of[i] = python_specs.size();
      python_specs.push_back(python_specs[i]);
    }
  }
  std::vector<StartedSandbox> sandboxed;
  if (!python_specs.empty()) {
    SandboxOptions sandbox_options;
    sandbox_options.slot_count = shm::max_slots;
    sandbox_options.keep_failed = !options_.offline || options_.allow_bypass;  // never fatal live
    sandbox_options.rt_priority = options_.sandbox_rt_priority;
    // One zygote per node for its life (render: the run's), kept across rate changes.
    if (config.sandbox_zygote) {
      try {
        // The supervisor's log: a zygote restart is logged from whichever thread forks.
        SandboxLogFn log = options_.supervision.log ? options_.supervision.log : SandboxLogFn(log_to_stderr);
        zygote_ = std::make_shared<Zygote>(std::filesystem::path{}, [log](std::string_view line) {
          log("zygote", SandboxLogLevel::warning, line);
        });
      } catch (const std::exception& e) {
        report("zygote", std::string(e.what()) + "; every sandbox starts on its own");
      }
    }
    sandbox_options.zygote = zygote_.get();
    if (options_.supervision.log) sandbox_options.log = options_.supervision.log;
    sandbox_options.preload_only.assign(python_specs.size(), false);
    for (std::size_t i = python_count; i < python_specs.size(); ++i) sandbox_options.preload_only[i] = true;
    sandboxed = start_sandboxes(std::span<const PluginSpec>(python_specs), sample_rate, channels_, max_frames_,
                                sandbox_options);
  }

  stand_ins_.resize(python_count);
  for (std::size_t i = 0; i < stand_in_of.size(); ++i)
    if (stand_in_of[i] != 0) stand_ins_[i] = std::move(sandboxed.at(stand_in_of[i]));

  std::vector<std::vector<std::unique_ptr<SandboxInstance>>> instances;  // per slot, for the supervisor
  std::size_t next_sandboxed = 0;
  for (const auto& spec : config.plugins) {
    if (spec.kind == PluginKind::python) {
      StartedSandbox& started = sandboxed.at(next_sandboxed++);
      sandboxes_.push_back(started.slot.get());
      SlotSchedule sched;
      sched.name = spec.name;
      sched.mode = spec.mode;
      sched.blocks = spec.blocks;
      schedules_.push_back(sched);
      instances.emplace_back();
      if (started.instance) instances.back().push_back(std::move(started.instance));
      for (auto& stage : started.stages) instances.back().push_back(std::move(stage));
      slots_.push_back(std::move(started.slot));
      remote_.push_back(true);
    } else {
      instances.emplace_back();
      slots_.push_back(make_native_processor(spec, sample_rate, channels_, max_frames_));
      remote_.push_back(false);
    }
  }

  check_roles(config);
  remote_count_ = python_count;
  allocate_scratch();
  reviewed_.resize(sandboxes_.size());
  reviewed_histogram_.resize(sandboxes_.size());
  for (PythonSlot* proc : sandboxes_) proc->set_crossfade_frames(options_.crossfade_frames);
  apply_schedule(true);
  stand_ins_.clear();  // their sandboxes shut down; the slots' own ones have seen no block yet
  supervisor_ = supervise_chain(config, slots_, std::move(instances), options_.offline, options_.supervision);
  publish_schedules();
}

Chain::Chain(const ChainConfig& config, double sample_rate, const Chain& previous)
    : zygote_(previous.zygote_),
      options_(previous.options_),
      latency_max_ms_(config.latency_max_ms),
      block_frames_(previous.block_frames_),
      sandboxes_(previous.sandboxes_),
      schedules_(previous.schedules_),
      reviewed_(previous.reviewed_),
      reviewed_histogram_(previous.reviewed_histogram_),
      channels_(previous.channels_),
      has_source_(previous.has_source_),
      has_sink_(previous.has_sink_),
      max_frames_(previous.max_frames_),
      sample_rate_(sample_rate),
      remote_(previous.remote_),
      remote_count_(previous.remote_count_) {
  if (config.plugins.size() != previous.slots_.size() || config.channels != channels_)
    throw PluginError("chain: a rate change keeps the chain's plugins and channels");
  for (std::size_t i = 0; i < config.plugins.size(); ++i) {
    const PluginSpec& spec = config.plugins[i];
    if ((spec.kind == PluginKind::python) != remote_[i])
      throw PluginError("chain: plugin \"" + spec.name + "\" changed its kind");
    slots_.push_back(remote_[i] ? previous.slots_[i]
                                : std::shared_ptr<Processor>(
                                      make_native_processor(spec, sample_rate, channels_, max_frames_)));
  }
  allocate_scratch();
  apply_schedule(false);  // the new period; running slots adopt it at their next call
  supervisor_ = previous.supervisor_;
  if (supervisor_) {
    supervisor_->rebind_slots(slots_);
    supervisor_->set_sample_rate(sample_rate);
    publish_schedules();
  }
}

void Chain::allocate_scratch() {
  scratch_.assign(std::size_t{2} * channels_ * max_frames_, 0.0F);
  for (std::uint32_t ch = 0; ch < channels_; ++ch) {
    ping_[ch] = scratch_.data() + std::size_t{ch} * max_frames_;
    pong_[ch] = scratch_.data() + std::size_t{channels_ + ch} * max_frames_;
  }
}

void Chain::publish_schedules() const {
  if (!supervisor_) return;
  for (std::size_t i = 0; i < sandboxes_.size(); ++i) {
    const SlotSchedule& sched = schedules_[i];
    std::string why = sched.decision.why;
    if (sched.mode != SlotMode::auto_select)
      why = sched.blocks == 0 ? "sync (configured)"
                              : "pipelined over " + std::to_string(sched.blocks) + " blocks (configured)";
    const bool fits = sched.mode != SlotMode::auto_select || sched.decision.fits;
    supervisor_->set_schedule(*sandboxes_[i], to_string(sched.mode), fits, std::move(why));
  }
}

void Chain::check_roles(const ChainConfig& config) {
  std::size_t next_sandboxed = 0;
  for (std::size_t i = 0; i < config.plugins.size(); ++i) {
    const PluginSpec& spec = config.plugins[i];
    if (spec.kind != PluginKind::python) continue;
    const std::string& role = sandboxes_.at(next_sandboxed++)->info().role;
    if (role == "source" && i != 0)
      throw PluginError("plugin \"" + spec.name + "\" is a source: it can only be the first plugin of the chain");
    if (role == "sink" && i + 1 != config.plugins.size())
      throw PluginError("plugin \"" + spec.name + "\" is a sink: it can only be the last plugin of the chain");
    if (role == "source") has_source_ = true;
    if (role == "sink") has_sink_ = true;
  }
}

void Chain::report(std::string_view slot, std::string_view line) const {
  if (options_.log) {
    options_.log(slot, line);
    return;
  }
  std::string text = "sandpipe: [";
  text.append(slot);
  text += "] ";
  text.append(line);
  text += '\n';
  std::fwrite(text.data(), 1, text.size(), stderr);
}

void Chain::apply_schedule(bool initial) {
  if (sandboxes_.empty()) return;
  SlotBudget budget;
  budget.period_ns = static_cast<std::uint64_t>(static_cast<double>(block_frames_) * 1e9 / sample_rate_);
  budget.share_ns = static_cast<std::uint64_t>(static_cast<double>(budget.period_ns) * options_.budget_fraction /
                                               static_cast<double>(remote_count_));
  // latency.max-ms is the chain's: what configured pipelined slots add comes off it first, then
  // each auto slot in chain order gets what the earlier ones left.
  const auto chain_budget_ns = static_cast<std::uint64_t>(latency_max_ms_ * 1e6);
  std::uint64_t spent_ns = 0;
  for (const SlotSchedule& sched : schedules_)
    if (sched.mode == SlotMode::pipelined) spent_ns += std::uint64_t{sched.blocks} * budget.period_ns;
  for (std::size_t i = 0; i < sandboxes_.size(); ++i) {
    PythonSlot& proc = *sandboxes_[i];
    SlotSchedule& sched = schedules_[i];
    budget.max_latency_ns = chain_budget_ns > spent_ns ? chain_budget_ns - spent_ns : 0;
    budget.max_blocks = std::min(proc.max_pipeline_blocks(), max_pipeline_blocks);
    switch (sched.mode) {
      case SlotMode::sync:
        proc.set_pipeline(0, block_frames_);
        break;
      case SlotMode::pipelined:
        proc.set_pipeline(sched.blocks, block_frames_);
        break;
      case SlotMode::auto_select: {
        if (initial) calibrate_on_stand_in(i, sched);
        HistogramCounts measured = sched.calibration;
        measured.merge(proc.histogram().snapshot());
        sched.decision = choose_mode(measured, budget);
        proc.set_pipeline(sched.decision.blocks, block_frames_);
        spent_ns += std::uint64_t{proc.pipeline_blocks()} * budget.period_ns;
        // A block longer than the slot may wait for, seen by the calibration, is said in so many
        // words (the p99.9 of 128 blocks is their longest, but one slow block reads as a rate).
        const std::uint64_t longest = sched.calibration.max_ns;
        const bool over = longest > budget.share_ns;
        if (over)
          sched.decision.why += "; calibration saw a block of " + format_ms(longest) +
                                ", longer than the slot's budget of " + format_ms(budget.share_ns);
        report(sched.name, "scheduler: " + sched.decision.why);
        if (over && initial) {
          const std::uint32_t k = proc.pipeline_blocks();
          const bool absorbed = longest <= std::uint64_t{k} * budget.period_ns + budget.share_ns;
          report(sched.name, std::string("scheduler: ") + (absorbed ? "" : "WARNING: ") +
                                 "a calibration block took " + format_ms(longest) +
                                 ", longer than the slot's budget of " + format_ms(budget.share_ns) +
                                 " per " + format_ms(budget.period_ns) + " block: " +
                                 (absorbed ? "the pipeline over " + std::to_string(k) + (k == 1 ? " block" : " blocks") + " absorbs it"
                                           : "a block that slow misses its deadline"));
        }
        if (!sched.decision.fits) report(sched.name, "scheduler: WARNING: the plugin is too slow for latency.max-ms");
        break;
      }
    }
    sched.blocks = proc.pipeline_blocks();
    sched.latency_frames = proc.pipeline_frames();
  }
}

void Chain::calibrate_on_stand_in(std::size_t i, SlotSchedule& sched) {
  PythonSlot& proc = *sandboxes_[i];
  StartedSandbox* stand_in = i < stand_ins_.size() && stand_ins_[i].slot ? &stand_ins_[i] : nullptr;
  if (stand_in == nullptr) return;
  // A source's or sink's calibration blocks would be heard or recorded: it measures while running.
  if (proc.info().role == "source" || proc.info().role == "sink") return;
  if (proc.info().api != "sdk") {
    if (proc.info().api == "legacy")
      report(sched.name,
             "scheduler: no calibration burst for an earlier-API plugin (its initialize()/start() run "
             "once, in the slot's own sandbox); measuring while running");
    return;
  }
  const std::string error = stand_in->load_preloaded(std::chrono::seconds(30));
  if (!error.empty()) {
    report(sched.name,
           "scheduler: the calibration's stand-in did not load (" + error + "); measuring while running");
    return;
  }
  if (!stand_in->slot->calibrate(options_.calibration_blocks, block_frames_, 2'000'000'000ULL, sched.calibration))
    report(sched.name, "scheduler: calibration got no answer in time; measuring while running");
}

bool Chain::set_block_frames(std::uint32_t block_frames) {
  const std::uint32_t clamped = std::clamp<std::uint32_t>(block_frames, 1, max_frames_);
  if (clamped == block_frames_) return false;
  const std::uint32_t before = latency_frames();
  block_frames_ = clamped;
  apply_schedule(false);
  publish_schedules();
  return latency_frames() != before;
}

bool Chain::review_schedule() {
  const std::uint32_t before = latency_frames();
  const auto period_ns = static_cast<std::uint64_t>(static_cast<double>(block_frames_) * 1e9 / sample_rate_);
  const auto max_latency_ns = static_cast<std::uint64_t>(latency_max_ms_ * 1e6);
  // The chain's pipelined latency so far: a slot deepens only while the sum stays in budget.
  std::uint64_t chain_ns = 0;
  for (const auto& sandbox : sandboxes_) chain_ns += std::uint64_t{sandbox->pipeline_blocks()} * period_ns;
  for (std::size_t i = 0; i < sandboxes_.size(); ++i) {
    PythonSlot& proc = *sandboxes_[i];
    SlotSchedule& sched = schedules_[i];
    const SlotCounters now = proc.counters();
    const std::uint64_t blocks = now.blocks - reviewed_[i].blocks;
    const std::uint64_t misses = now.deadline_misses - reviewed_[i].deadline_misses;
    if (sched.mode != SlotMode::auto_select || !should_deepen(blocks, misses)) {
      if (blocks >= 200) reviewed_[i] = now;  // a quiet window: start the next one
      continue;
    }
    reviewed_[i] = now;
    const std::uint32_t k = proc.pipeline_blocks() + 1;
    if (k > std::min(proc.max_pipeline_blocks(), max_pipeline_blocks) || chain_ns + period_ns > max_latency_ns) {
      if (sched.decision.fits) {
        sched.decision.fits = false;
        sched.decision.why = "sustained deadline misses at the deepest pipeline latency.max-ms allows";
        report(sched.name, "scheduler: WARNING: " + sched.decision.why);
      }
      continue;
    }
    proc.set_pipeline(k, block_frames_);
    chain_ns += period_ns;
    sched.blocks = proc.pipeline_blocks();
    sched.latency_frames = proc.pipeline_frames();
    sched.decision.blocks = sched.blocks;
    sched.decision.why = std::to_string(misses) + " of " + std::to_string(blocks) +
                         " blocks missed: pipelined over " + std::to_string(k) +
                         (k == 1 ? " block" : " blocks");
    report(sched.name, "scheduler: " + sched.decision.why);
  }
  publish_schedules();
  return latency_frames() != before;
}

Chain::~Chain() = default;

std::uint32_t Chain::latency_frames() const noexcept {
  std::uint32_t total = 0;
  for (const auto& slot : slots_) total += slot->latency_frames();
  return total;
}

}  // namespace sandpipe::host
