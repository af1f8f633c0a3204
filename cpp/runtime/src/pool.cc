// StreamPool: many independent streams stepped together in batched calls. States are kept per
// stream on the host, stacked along axis 0 for a call and unstacked after it; rows are padded
// to the longest segment and masked by lengths; new streams are reset in-graph.
#include <algorithm>

#include "memx/runtime.hpp"
#include "runtime_impl.hpp"

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
}  // namespace

struct StreamPool::Impl {
  std::shared_ptr<const Runtime::Impl> rt;
  int64_t max_batch = 64;
  std::map<int64_t, SnapshotData> slots;  // batch-1 state per open stream
  int64_t next_id = 0;

  SnapshotData& slot(int64_t id) {
    auto it = slots.find(id);
    if (it == slots.end()) throw InputError("unknown stream id", "one of the " + std::to_string(slots.size()) + " open streams", std::to_string(id));
    return it->second;
  }
  const SnapshotData& slot(int64_t id) const { return const_cast<Impl*>(this)->slot(id); }

  void run_chunk(const std::vector<int64_t>& chunk, const std::map<int64_t, std::vector<int64_t>>& inputs,
                 std::map<int64_t, std::map<std::string, Tensor>>& results, std::map<int64_t, SnapshotData>& updates) const {
    const auto batch = static_cast<int64_t>(chunk.size());
    int64_t seg = 0;
    for (int64_t id : chunk) seg = std::max<int64_t>(seg, static_cast<int64_t>(inputs.at(id).size()));
    Tensor tokens(DType::Int64, {batch, seg});  // [B, S] padded with token 0
    std::vector<int64_t> lengths;
    std::vector<bool> reset;
    std::vector<const SnapshotData*> rows;
    for (int64_t r = 0; r < batch; ++r) {
      const auto& ids = inputs.at(chunk[r]);
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
    Runtime::StepResult res = detail::run_step_host(*rt, tokens, make_lengths(lengths), make_reset(reset), stacked);
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
  }
};

StreamPool::StreamPool(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
StreamPool::StreamPool(StreamPool&&) noexcept = default;
StreamPool& StreamPool::operator=(StreamPool&&) noexcept = default;
StreamPool::~StreamPool() = default;

StreamPool Runtime::pool(int64_t max_batch) const {
  if (max_batch < 1) throw InputError("max_batch must be positive", ">= 1", std::to_string(max_batch));
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
}
void StreamPool::reset(int64_t id) { impl_->slot(id) = detail::fresh_state(*impl_->rt, 1); }
bool StreamPool::contains(int64_t id) const { return impl_->slots.count(id) > 0; }
std::size_t StreamPool::size() const { return impl_->slots.size(); }
std::vector<uint8_t> StreamPool::snapshot(int64_t id) const { return detail::snapshot_of(*impl_->rt, impl_->slot(id)); }
void StreamPool::restore(int64_t id, const std::vector<uint8_t>& blob) {
  SnapshotData& target = impl_->slot(id);
  target = detail::restore_from(*impl_->rt, blob, 1);
}
std::map<std::string, Tensor> StreamPool::state(int64_t id) const { return impl_->slot(id).states; }

std::map<int64_t, std::map<std::string, Tensor>> StreamPool::step(const std::map<int64_t, std::vector<int64_t>>& inputs) {
  const Manifest& m = impl_->rt->manifest;
  std::vector<int64_t> order;
  for (const auto& [id, ids] : inputs) {
    impl_->slot(id);
    check_tokens(make_tokens(ids, 1, static_cast<int64_t>(ids.size())), 1, m);
    order.push_back(id);
  }
  std::map<int64_t, std::map<std::string, Tensor>> results;
  std::map<int64_t, SnapshotData> updates;
  for (std::size_t start = 0; start < order.size(); start += impl_->max_batch) {
    std::vector<int64_t> chunk(order.begin() + start, order.begin() + std::min(order.size(), start + impl_->max_batch));
    impl_->run_chunk(chunk, inputs, results, updates);
  }
  for (auto& [id, st] : updates) impl_->slots[id] = std::move(st);  // commit only after every chunk succeeded
  return results;
}

}  // namespace memx
