// StreamPool: many independent streams stepped together in batched calls. States are kept per
// stream on the host, stacked along axis 0 for a call and unstacked after it; rows are padded
// to the longest segment and masked by lengths; new streams are reset in-graph. Generation
// (append, generate, flush) is in pool_generation.cc.
#include <algorithm>
#include <cstring>

#include "memx/runtime.hpp"
#include "pool_impl.hpp"

namespace memx {

namespace {
// Keep the first `length` positions along `axis` (the batch axis included in the shape).
Tensor cut(const Tensor& t, std::optional<int> axis, int64_t length) {
  if (!axis || *axis < 0 || static_cast<std::size_t>(*axis) >= t.shape.size() || t.shape[*axis] == length) return t;
  const int a = *axis;
  Shape shape = t.shape;
  shape[a] = length;
  Tensor out(t.dtype, shape);
  int64_t outer = 1, inner = static_cast<int64_t>(dtype_size(t.dtype));
  for (int i = 0; i < a; ++i) outer *= t.shape[i];
  for (std::size_t i = a + 1; i < t.shape.size(); ++i) inner *= t.shape[i];
  for (int64_t o = 0; o < outer; ++o)
    std::copy_n(t.bytes.begin() + (o * t.shape[a]) * inner, length * inner, out.bytes.begin() + (o * length) * inner);
  return out;
}

Tensor drop_batch_axis(Tensor t) {
  t.shape.erase(t.shape.begin());
  return t;
}

Tensor add_batch_axis(Tensor t) {
  t.shape.insert(t.shape.begin(), 1);
  return t;
}

// every element of t set to `value` (the pad value of an extra input)
void fill(Tensor& t, double value, const std::string& name) {
  if (value == 0) return;  // tensors start zero-filled
  const int64_t n = t.size();
  switch (t.dtype) {
    case DType::Float32: std::fill_n(t.data<float>(), n, static_cast<float>(value)); break;
    case DType::Int64: std::fill_n(t.data<int64_t>(), n, static_cast<int64_t>(value)); break;
    case DType::Int32: std::fill_n(t.data<int32_t>(), n, static_cast<int32_t>(value)); break;
    case DType::Int8: std::fill_n(t.data<int8_t>(), n, static_cast<int8_t>(value)); break;
    case DType::UInt8:
    case DType::Bool: std::fill_n(t.data<uint8_t>(), n, static_cast<uint8_t>(t.dtype == DType::Bool ? 1.0 : value)); break;
    default: throw InputError("extra input '" + name + "' of a half dtype has a pad value the pool cannot write", "pad 0", std::to_string(value));
  }
}

// rows [1, ...] of one extra input -> [B, ...], "segment" axes padded to `seg` with the pad value
Tensor stack_padded(const std::vector<const Tensor*>& rows, const InputSpec& spec, int64_t seg) {
  Shape shape = {static_cast<int64_t>(rows.size())};
  for (std::size_t i = 1; i < spec.shape.size(); ++i) shape.push_back(spec.shape[i].name == "segment" ? seg : spec.shape[i].size);
  Tensor out(spec.dtype, shape);
  fill(out, spec.pad, spec.name);
  const std::size_t item = dtype_size(spec.dtype), rank = shape.size();
  Shape out_strides(rank, 1);
  for (std::size_t i = rank - 1; i > 0; --i) out_strides[i - 1] = out_strides[i] * shape[i];
  for (std::size_t r = 0; r < rows.size(); ++r) {
    const Tensor& row = *rows[r];
    for (int64_t flat = 0; flat < row.size(); ++flat) {
      int64_t rest = flat, offset = static_cast<int64_t>(r) * out_strides[0];
      for (std::size_t axis = rank - 1; axis > 0; --axis) {  // the row's index on each axis after the batch axis
        offset += (rest % row.shape[axis]) * out_strides[axis];
        rest /= row.shape[axis];
      }
      std::copy_n(row.bytes.begin() + flat * static_cast<int64_t>(item), item, out.bytes.begin() + offset * static_cast<int64_t>(item));
    }
  }
  return out;
}
}  // namespace

SnapshotData& StreamPool::Impl::slot(int64_t id) {
  auto it = slots.find(id);
  if (it == slots.end()) throw InputError("unknown stream id", "one of the " + std::to_string(slots.size()) + " open streams", std::to_string(id));
  return it->second;
}

const SnapshotData& StreamPool::Impl::slot(int64_t id) const { return const_cast<Impl*>(this)->slot(id); }

void StreamPool::Impl::check_no_open_segment(int64_t id) const {
  auto it = gen.find(id);
  if (it == gen.end() || it->second.position[0] == 0) return;
  throw InputError("stream " + std::to_string(id) + " holds a partial segment from append/generate: a step would skip its memory write", "an empty segment (position 0)",
                   "position " + std::to_string(it->second.position[0]), "pool.flush([sid]) first");
}

const Tensor* StreamPool::Impl::logits_of(int64_t id) const {
  auto rows = gen.find(id);
  if (rows != gen.end()) return rows->second.has_logits[0] ? &rows->second.logits : nullptr;
  auto step = step_logits.find(id);
  return step == step_logits.end() ? nullptr : &step->second;
}

void StreamPool::Impl::keep_step_logits(int64_t id, Tensor last) {
  auto rows = gen.find(id);
  if (rows == gen.end()) {
    step_logits.insert_or_assign(id, std::move(last));
    return;
  }
  rows->second.logits = std::move(last);
  rows->second.has_logits[0] = true;
}

void StreamPool::Impl::run_chunk(const std::vector<int64_t>& chunk, const std::map<int64_t, PoolInput>& inputs, std::map<int64_t, std::map<std::string, Tensor>>& results,
                                 std::map<int64_t, SnapshotData>& updates, std::map<int64_t, Tensor>& last) const {
  const auto batch = static_cast<int64_t>(chunk.size());
  int64_t seg = 0;
  for (int64_t id : chunk) seg = std::max<int64_t>(seg, static_cast<int64_t>(inputs.at(id).tokens.size()));
  StepInputs extras;
  for (const auto& spec : rt->manifest.inputs) {
    std::vector<const Tensor*> parts;
    for (int64_t id : chunk) parts.push_back(&checked.at(id).at(spec.name));
    extras.emplace(spec.name, stack_padded(parts, spec, seg));
  }
  Tensor tokens(DType::Int64, {batch, seg});  // [B, S] padded with token 0
  std::vector<int64_t> lengths;
  std::vector<bool> reset;
  std::vector<const SnapshotData*> rows;
  for (int64_t r = 0; r < batch; ++r) {
    const auto& ids = inputs.at(chunk[r]).tokens;
    std::copy(ids.begin(), ids.end(), tokens.data<int64_t>() + r * seg);
    lengths.push_back(static_cast<int64_t>(ids.size()));
    rows.push_back(&slots.at(chunk[r]));
    reset.push_back(rows.back()->pending_reset[0]);
  }
  std::map<std::string, Tensor> stacked;
  for (const auto& s : rt->manifest.state) {
    std::vector<const Tensor*> parts;
    for (const SnapshotData* row : rows) parts.push_back(&row->states.at(s.name));
    stacked.emplace(s.name, concat_rows(parts));
  }
  Runtime::StepResult res = detail::run_step_host(*rt, tokens, make_lengths(lengths), make_reset(reset), stacked, extras);
  for (int64_t r = 0; r < batch; ++r) {
    auto& out = results[chunk[r]];
    for (const auto& o : rt->manifest.outputs) out.emplace(o.name, drop_batch_axis(cut(res.outputs.at(o.name).rows(r, r + 1), o.segment_axis, lengths[r])));
    SnapshotData next;
    next.model_id = rows[r]->model_id;
    next.order = rows[r]->order;
    for (const auto& [name, t] : res.states) next.states.emplace(name, t.rows(r, r + 1));
    next.pending_reset = {false};
    next.segments = rows[r]->segments + 1;
    updates[chunk[r]] = std::move(next);
  }
  auto logits = res.outputs.find("logits");
  if (!rt->manifest.decode || logits == res.outputs.end()) return;  // no generation state without decode graphs (as Stream)
  const Tensor& l = logits->second;  // [B, S, V]
  const int64_t s = l.shape[1], v = l.shape[2];
  for (int64_t r = 0; r < batch; ++r) {
    if (lengths[r] <= 0) continue;
    Tensor row(DType::Float32, {1, v});
    std::memcpy(row.data<float>(), l.data<float>() + (r * s + lengths[r] - 1) * v, v * sizeof(float));
    last.insert_or_assign(chunk[r], std::move(row));
  }
}

StreamPool::StreamPool(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
StreamPool::StreamPool(StreamPool&&) noexcept = default;
StreamPool& StreamPool::operator=(StreamPool&&) noexcept = default;
StreamPool::~StreamPool() = default;

StreamPool Runtime::pool(int64_t max_batch) const {
  check_count(max_batch, "max_batch");
  auto impl = std::make_unique<StreamPool::Impl>();
  impl->rt = impl_;
  impl->max_batch = max_batch;
  return StreamPool(std::move(impl));
}

int64_t StreamPool::open() {
  const int64_t id = impl_->next_id++;
  impl_->slots[id] = detail::fresh_state(*impl_->rt, 1);
  return id;
}
void StreamPool::close(int64_t id) {
  impl_->slot(id);
  impl_->slots.erase(id);
  impl_->gen.erase(id);
  impl_->step_logits.erase(id);
}
void StreamPool::reset(int64_t id) {
  impl_->slot(id) = detail::fresh_state(*impl_->rt, 1);
  impl_->gen.erase(id);
  impl_->step_logits.erase(id);
}
bool StreamPool::contains(int64_t id) const { return impl_->slots.count(id) > 0; }
std::size_t StreamPool::size() const { return impl_->slots.size(); }
std::vector<uint8_t> StreamPool::snapshot(int64_t id) const {
  SnapshotData data = impl_->slot(id);
  auto rows = impl_->gen.find(id);
  if (rows != impl_->gen.end()) rows->second.to_snapshot(data);  // a generating stream: its open segment too, as Stream writes it
  return detail::snapshot_of(*impl_->rt, data);
}

void StreamPool::restore(int64_t id, const std::vector<uint8_t>& blob) {
  SnapshotData& target = impl_->slot(id);
  SnapshotData data = detail::restore_from(*impl_->rt, blob, 1);
  std::optional<detail::DecodeRows> rows = detail::DecodeRows::from_snapshot(data, impl_->rt->manifest);
  for (auto it = data.states.begin(); it != data.states.end();)  // the slot keeps the step state alone
    it = it->first.rfind(detail::kDecodePrefix, 0) == 0 ? data.states.erase(it) : std::next(it);
  data.order.erase(std::remove_if(data.order.begin(), data.order.end(), [](const std::string& n) { return n.rfind(detail::kDecodePrefix, 0) == 0; }), data.order.end());
  target = std::move(data);
  if (rows)
    impl_->gen[id] = std::move(*rows);
  else
    impl_->gen.erase(id);
  impl_->step_logits.erase(id);
}
std::map<std::string, Tensor> StreamPool::state(int64_t id) const { return impl_->slot(id).states; }

std::map<int64_t, std::map<std::string, Tensor>> StreamPool::step(const std::map<int64_t, std::vector<int64_t>>& inputs) {
  std::map<int64_t, PoolInput> full;
  for (const auto& [id, ids] : inputs) full[id].tokens = ids;
  return step(full);
}

std::map<int64_t, std::map<std::string, Tensor>> StreamPool::step(const std::map<int64_t, PoolInput>& inputs) {
  const Manifest& m = impl_->rt->manifest;
  std::vector<int64_t> order;
  impl_->checked.clear();
  for (const auto& [id, given] : inputs) {
    impl_->slot(id);
    impl_->check_no_open_segment(id);
    const auto len = static_cast<int64_t>(given.tokens.size());
    check_tokens(make_tokens(given.tokens, 1, len), 1, m);
    StepInputs batched;
    for (const auto& [name, t] : given.inputs) batched.emplace(name, add_batch_axis(t));
    check_inputs(batched, m, 1, len);
    impl_->checked[id] = std::move(batched);
    order.push_back(id);
  }
  std::map<int64_t, std::map<std::string, Tensor>> results;
  std::map<int64_t, SnapshotData> updates;
  std::map<int64_t, Tensor> last;
  for (std::size_t start = 0; start < order.size(); start += impl_->max_batch) {
    std::vector<int64_t> chunk(order.begin() + start, order.begin() + std::min(order.size(), start + impl_->max_batch));
    impl_->run_chunk(chunk, inputs, results, updates, last);
  }
  for (auto& [id, st] : updates) impl_->slots[id] = std::move(st);  // commit only after every chunk succeeded
  for (auto& [id, l] : last) impl_->keep_step_logits(id, std::move(l));  // generate can follow the step
  return results;
}

}  // namespace memx
