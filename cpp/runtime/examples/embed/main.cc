// embed PACKAGE [SEGMENTS]: a chat-style loop that keeps one stream's memory across calls,
// checkpoints it, survives a bad request, and resumes from the checkpoint.
#include <cstdio>
#include <memx/memx.hpp>
#include <vector>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s PACKAGE [SEGMENTS]\n", argv[0]);
    return 2;
  }
  const int segments = argc > 2 ? std::atoi(argv[2]) : 32;
  try {
    memx::Runtime runtime(argv[1]);  // CPU; see memx::RuntimeOptions for CUDA/TensorRT and kernels
    const memx::Manifest& m = runtime.manifest();
    memx::Stream stream = runtime.stream();
    const int64_t seg = m.segment_max;
    std::vector<int64_t> ids(seg);
    std::vector<uint8_t> checkpoint;
    for (int k = 0; k < segments; ++k) {
      for (int64_t i = 0; i < seg; ++i) ids[i] = (k * 31 + i * 7) % m.vocab_size;
      memx::StepOutputs out = stream.step(memx::make_tokens(ids, 1, seg));
      if (k == segments / 2) checkpoint = stream.snapshot();
      if (k + 1 == segments) std::printf("%s after %lld segments: %s\n", m.outputs[0].name.c_str(), static_cast<long long>(stream.segments()), out.outputs.at(m.outputs[0].name).describe().c_str());
    }
    try {
      stream.step(memx::make_tokens(std::vector<int64_t>(seg, m.vocab_size), 1, seg));  // every id out of range
    } catch (const memx::TokenRangeError& e) {
      std::printf("refused: %s (stream still at %lld segments)\n", e.what(), static_cast<long long>(stream.segments()));
    }
    stream.restore(checkpoint);
    std::printf("restored checkpoint: %lld segments, %zu snapshot bytes\n", static_cast<long long>(stream.segments()), checkpoint.size());
  } catch (const memx::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
