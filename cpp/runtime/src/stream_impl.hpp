// Stream::Impl, shared by stream.cc (steps, snapshots) and generation.cc (append, generate).
#pragma once

#include <functional>
#include <optional>

#include "memx/runtime.hpp"
#include "runtime_impl.hpp"

namespace memx {

namespace detail {

// Generation state of B rows (host tensors, batch axis 0), the twin of memx/runtimes/generation.py DecodeRows.
struct DecodeRows {
  // decode cache tensors by cache name, shared and never written in place (copy on write):
  // copying DecodeRows copies pointers, so an append works on a copy at no cost
  std::map<std::string, std::shared_ptr<const Tensor>> cache;
  Tensor tokens;                        // int64 [B, capacity]: the current segment's tokens
  std::vector<int64_t> position;        // tokens in the current segment
  Tensor logits;                        // float32 [B, V]: logits of each row's next token
  std::vector<bool> has_logits;

  static DecodeRows empty(const Manifest& m, int64_t batch);
  // the decode.* tensors of a generating stream's snapshot (removed from data.states), or nothing
  static std::optional<DecodeRows> from_snapshot(const SnapshotData& data, const Manifest& m);
  void to_snapshot(SnapshotData& data) const;
  DecodeRows take(const std::vector<int64_t>& rows) const;
  void put(const std::vector<int64_t>& rows, const DecodeRows& part);
  static DecodeRows stack(const std::vector<const DecodeRows*>& parts);  // rows of several streams as one batch
};

// B rows during one append or flush, committed by the caller (what Python's Generator.append_rows
// returns): the step state on the host, the rows still waiting for their reset, the decode rows
// and the segments each row committed. The step state is loaded only when a step or decode_open
// needs it (appends inside a segment never do): `load` brings a Stream's state to the host or
// stacks a pool's rows.
struct Rows {
  std::function<std::map<std::string, Tensor>()> load;
  std::optional<std::map<std::string, Tensor>> host;
  bool states_changed = false;
  std::vector<bool> pending;
  DecodeRows gen;
  std::vector<int64_t> committed;

  std::map<std::string, Tensor>& states();
};

// The engine Stream and StreamPool share (memx/runtimes/generation.py Generator); both work on
// r alone and leave the caller to commit it.
// Append counts[b] tokens of tokens[b] (int64 [B, n]) to row b: whole segments through the step
// graphs, the rest through decode; a row's memory is written when its segment fills.
void append_rows(const Runtime::Impl& rt, Rows& r, const Tensor& tokens, const std::vector<int64_t>& counts, int64_t segment_len);
// Write the memory of every row's partial segment now (a shorter segment); empty rows are unchanged.
void flush_rows(const Runtime::Impl& rt, Rows& r);

// The package's decode graphs, or BackendUnavailableError saying it has none.
const DecodeSpec& decode_spec(const Manifest& m);
// A generation segment length as set (0: the decode capacity), checked against the capacity.
int64_t checked_segment_len(int64_t segment_len, const Manifest& m);
// Tokens to append, int64 [B, n] (or [n]): n >= 1 (InputError) and ids in the vocabulary (TokenRangeError,
// naming the smallest id if one is negative, else the largest, at its first place, as Python does).
void check_new_tokens(const Tensor& tokens, const Manifest& m);
// generate()'s arguments: max_new_tokens >= 0, the sampling options, stop tokens in the vocabulary.
void check_generate_args(const Manifest& m, int64_t max_new_tokens, const SamplingOptions& options, const std::vector<int64_t>& stop_tokens);

constexpr const char* kDecodePrefix = "decode.";
// the names and layouts a generating stream's snapshot holds beyond its state, in the order Python writes them
std::vector<StateLayout> decode_schema(const Manifest& m);

// rows of a tensor along axis 0 (an index list), and their write-back
Tensor take_rows(const Tensor& t, const std::vector<int64_t>& rows);
void put_rows(Tensor& dst, const std::vector<int64_t>& rows, const Tensor& part);

}  // namespace detail

struct Stream::Impl {
  std::shared_ptr<const Runtime::Impl> rt;
  int64_t batch = 1;
  std::vector<Ort::Value> states;  // manifest state order
  std::vector<bool> pending;       // row starts anew at its next step
  int64_t segments = 0;
  // generation (generation.cc): the decode rows once the stream appends, and the segment length
  std::optional<detail::DecodeRows> gen;
  int64_t segment_len = 0;  // 0: the decode capacity
  Tensor step_logits;             // float32 [B, V]: last real logits of each row's last step (package with decode graphs)
  std::vector<bool> step_has;     // rows of step_logits that hold logits

  void load(const SnapshotData& data) {
    std::vector<Ort::Value> values;
    for (const auto& s : rt->manifest.state) values.push_back(detail::owned_copy(data.states.at(s.name)));
    states = std::move(values);
    pending = data.pending_reset;
    segments = data.segments;
    gen = detail::DecodeRows::from_snapshot(data, rt->manifest);
    step_logits = Tensor();
    step_has.clear();
  }

  std::map<std::string, Tensor> host_states() const {
    std::map<std::string, Tensor> out;
    for (std::size_t i = 0; i < states.size(); ++i) out.emplace(rt->manifest.state[i].name, detail::to_host(states[i]));
    return out;
  }

  SnapshotData save() const {
    SnapshotData data;
    data.model_id = rt->manifest.model_id;
    for (std::size_t i = 0; i < states.size(); ++i) {
      data.states.emplace(rt->manifest.state[i].name, detail::to_host(states[i]));
      data.order.push_back(rt->manifest.state[i].name);
    }
    data.pending_reset = pending;
    data.segments = segments;
    if (gen) gen->to_snapshot(data);
    return data;
  }
};

}  // namespace memx
