// Stream: one stream (or a fixed batch of streams) carrying its memory across steps. The state
// lives in Ort::Values: host memory on CPU, device memory on CUDA/TensorRT providers, where each
// step binds the previous step's state outputs as inputs and gets fresh outputs (ping-pong:
// never one buffer as both input and output). A step commits only after it fully succeeded.
#include <algorithm>
#include <cstring>

#include "memx/runtime.hpp"
#include "runtime_impl.hpp"
#include "stream_impl.hpp"

namespace memx {

Stream::Stream(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Stream::Stream(Stream&&) noexcept = default;
Stream& Stream::operator=(Stream&&) noexcept = default;
Stream::~Stream() = default;

Stream Runtime::stream(int64_t batch_size) const {
  check_count(batch_size, "batch_size");
  auto impl = std::make_unique<Stream::Impl>();
  impl->rt = impl_;
  impl->batch = batch_size;
  impl->load(detail::fresh_state(*impl_, batch_size));
  return Stream(std::move(impl));
}

StepOutputs Stream::step(const Tensor& tokens, const Tensor& lengths, const Tensor& reset, const StepInputs& inputs) {
  Impl& st = *impl_;
  const Runtime::Impl& rt = *st.rt;
  check_tokens(tokens, st.batch, rt.manifest);
  const Tensor lens = checked_lengths(lengths, st.batch, tokens.shape[1]);
  Tensor rst = checked_reset(reset, st.batch);
  check_inputs(inputs, rt.manifest, st.batch, tokens.shape[1]);
  for (int64_t b = 0; b < st.batch; ++b) rst.bytes[b] = (rst.bytes[b] || st.pending[b]) ? 1 : 0;
  if (st.gen && std::any_of(st.gen->position.begin(), st.gen->position.end(), [](int64_t p) { return p > 0; }))
    throw InputError("the stream holds a partial segment from append/generate: a step would skip its memory write", "an empty segment (position 0)",
                     "a partial segment", "append until the segment fills, or call flush() first");

  std::vector<Ort::Value> owned;
  owned.reserve(3 + inputs.size());  // no reallocation: feeds point into it
  owned.push_back(detail::wrap(rt.cpu_memory, tokens));
  owned.push_back(detail::wrap(rt.cpu_memory, lens));
  owned.push_back(detail::wrap(rt.cpu_memory, rst));
  std::map<std::string, const Ort::Value*> feeds = {{"tokens", &owned[0]}, {"lengths", &owned[1]}, {"reset", &owned[2]}};
  for (const auto& [name, t] : inputs) {
    owned.push_back(detail::wrap(rt.cpu_memory, t));
    feeds[name] = &owned.back();
  }
  for (std::size_t i = 0; i < st.states.size(); ++i) feeds[rt.manifest.state[i].input] = &st.states[i];

  std::map<std::string, Ort::Value> produced = rt.run_graphs(feeds, true);
  rt.check_new_states(produced, st.batch);
  StepOutputs out;
  for (const auto& o : rt.manifest.outputs) out.outputs.emplace(o.name, detail::to_host(produced.at(o.name)));
  // commit: nothing above changed the stream
  for (std::size_t i = 0; i < st.states.size(); ++i) st.states[i] = std::move(produced.at(rt.manifest.state[i].output));
  std::fill(st.pending.begin(), st.pending.end(), false);
  ++st.segments;
  auto logits = out.outputs.find("logits");
  if (rt.manifest.decode && logits != out.outputs.end()) {  // the last real logits predict the next token (generate after step)
    const Tensor& l = logits->second;  // [B, S, V]
    const int64_t s = l.shape[1], v = l.shape[2];
    Tensor& keep = st.gen ? st.gen->logits : st.step_logits;
    std::vector<bool>& has = st.gen ? st.gen->has_logits : st.step_has;
    if (keep.bytes.empty()) keep = Tensor(DType::Float32, {st.batch, v});
    if (has.empty()) has.assign(st.batch, false);
    for (int64_t b = 0; b < st.batch; ++b) {
      const int64_t n = lens.data<int64_t>()[b];
      if (n <= 0) continue;
      std::memcpy(keep.data<float>() + b * v, l.data<float>() + (b * s + n - 1) * v, v * sizeof(float));
      has[b] = true;
    }
  }
  return out;
}

void Stream::reset(const std::vector<int64_t>& rows) {
  Impl& st = *impl_;
  std::vector<bool> sel(st.batch, rows.empty());
  for (int64_t r : rows) {
    if (r < -st.batch || r >= st.batch) {
      std::string got = "[";
      for (std::size_t i = 0; i < rows.size(); ++i) got += (i ? ", " : "") + std::to_string(rows[i]);
      throw InputError("reset row out of range", "0.." + std::to_string(st.batch - 1), got + "]");
    }
    sel[r < 0 ? r + st.batch : r] = true;
  }
  SnapshotData data = st.save();
  for (auto& [name, t] : data.states) {
    const std::size_t row = t.nbytes() / static_cast<std::size_t>(st.batch);
    for (int64_t b = 0; b < st.batch; ++b)
      if (sel[b]) std::fill(t.bytes.begin() + b * row, t.bytes.begin() + (b + 1) * row, 0);
  }
  for (int64_t b = 0; b < st.batch; ++b) data.pending_reset[b] = data.pending_reset[b] || sel[b];
  if (rows.empty()) data.segments = 0;
  Tensor step_logits = st.step_logits;
  std::vector<bool> step_has = st.step_has;
  st.load(data);
  for (int64_t b = 0; b < st.batch && !step_has.empty(); ++b)
    if (sel[b]) step_has[b] = false;
  st.step_logits = std::move(step_logits);
  st.step_has = std::move(step_has);
}

std::vector<uint8_t> Stream::snapshot() const { return detail::snapshot_of(*impl_->rt, impl_->save()); }

void Stream::restore(const std::vector<uint8_t>& blob) { impl_->load(detail::restore_from(*impl_->rt, blob, impl_->batch)); }

std::map<std::string, Tensor> Stream::state() const { return impl_->save().states; }
int64_t Stream::batch_size() const { return impl_->batch; }
int64_t Stream::segments() const { return impl_->segments; }

bool Stream::state_on_device() const {
  return std::any_of(impl_->states.begin(), impl_->states.end(),
                     [](const Ort::Value& v) { return v.GetTensorMemoryInfo().GetDeviceType() != OrtMemoryInfoDeviceType_CPU; });
}

}  // namespace memx
