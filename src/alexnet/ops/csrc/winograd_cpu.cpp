// The two transforms of a Winograd convolution on the CPU, in float32 and channels-last, for
// winograd.py (which does the products in between with torch.bmm and says why).
//
// Built from PyTorch's own operations the transforms took longer than the products they
// feed: a gather of overlapping tiles, then small matrix products that pass over the data
// once per tile dimension, then a permute to put the results back, each a trip through memory
// (conv2 of the paper's network at batch 64 held to AVX2: 95 ms against 155 ms directly,
// although its products alone take 39). Here each tile is read once, transformed in a
// per-thread buffer, and written once: the loops run along the channels, which channels-last
// keeps contiguous, so they vectorise whatever the channel count.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace {

// Input tiles transformed together: a tile's transformed values go to one row per point of
// the products' left operands, tiles x channels apart, and writing a few hundred bytes to each
// of n * n rows far apart, tile after tile, took longer (conv2, 32 images, one thread: 17.4
// against 12.6-15.3 ms) than gathering BLOCK tiles and writing each row's run at once. The
// results are read back a tile at a time: copying them in blocks first cost more than it
// saved (9.3 against 7.2-7.7 ms).
constexpr int64_t BLOCK = 16;

// out[c] = sum_k coefs[k] rows[k stride + c] (+ add[c]) for c < n. The sum of each value stays
// in a register over the COUNT terms, unrolled, and the loop runs along c: one store per value
// instead of one per term (the first version, term by term with the zero coefficients skipped,
// was bound by its stores and took 3x as long).
template <int COUNT>
void combine_fixed(float* __restrict__ out, const float* __restrict__ rows, int64_t stride,
                   const float* coefs, int64_t n, const float* __restrict__ add) {
  float k[COUNT];
  for (int i = 0; i < COUNT; ++i) k[i] = coefs[i];
  for (int64_t c = 0; c < n; ++c) {
    float acc = k[0] * rows[c];
    for (int i = 1; i < COUNT; ++i) acc += k[i] * rows[i * stride + c];
    out[c] = add ? acc + add[c] : acc;
  }
}

void combine(float* out, const float* rows, int64_t stride, const float* coefs, int64_t count,
             int64_t n, const float* add = nullptr) {
  switch (count) {
    case 4: return combine_fixed<4>(out, rows, stride, coefs, n, add);
    case 5: return combine_fixed<5>(out, rows, stride, coefs, n, add);
    case 6: return combine_fixed<6>(out, rows, stride, coefs, n, add);
    case 7: return combine_fixed<7>(out, rows, stride, coefs, n, add);
    case 8: return combine_fixed<8>(out, rows, stride, coefs, n, add);
    default: TORCH_CHECK(false, "winograd_cpu: tiles of 4 to 8 points, not ", count);
  }
}

// Where a tile lies: its image, and its row and column among the image's tiles.
struct TilePlace {
  int64_t image, ty, tx;
};

inline TilePlace place(int64_t tile, int64_t tiles_h, int64_t tiles_w) {
  const int64_t per_image = tiles_h * tiles_w;
  return {tile / per_image, tile % per_image / tiles_w, tile % tiles_w};
}

void check_float_channels_last(const at::Tensor& t, const char* what) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.dim() == 4 &&
                  t.is_contiguous(at::MemoryFormat::ChannelsLast),
              "winograd_cpu: ", what, " must be a channels-last float32 CPU tensor");
}

// V[g][a n + b][tile][c] = sum_ij BT[a][i] BT[b][j] x[tile's row + i][tile's column + j][g cg + c]
// for x (N, C, H, W) channels-last, zero-padded by `pad`, tiles m apart: the left operands of
// the products, one [tiles, C / groups] matrix per group and tile point.
at::Tensor input_tiles(const at::Tensor& x, const at::Tensor& bt, int64_t m, int64_t pad,
                       int64_t groups, int64_t tiles_h, int64_t tiles_w) {
  check_float_channels_last(x, "the input");
  const at::Tensor b = bt.to(at::kFloat).contiguous();
  TORCH_CHECK(b.dim() == 2 && b.size(0) == b.size(1) && b.size(0) >= m && m >= 1 && pad >= 0 &&
                  groups >= 1 && tiles_h >= 1 && tiles_w >= 1,
              "winograd_cpu.input_tiles: B^T must be square, of at least m points, and m, "
              "groups and the tile counts positive");
  const int64_t n = b.size(0), batch = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(C % groups == 0, "winograd_cpu: ", C, " channels in ", groups, " groups");
  const int64_t cg = C / groups, per_image = tiles_h * tiles_w, tiles = batch * per_image;
  at::Tensor v = at::empty({groups, n * n, tiles, cg}, x.options());
  const float *xp = x.data_ptr<float>(), *B = b.data_ptr<float>();
  float* vp = v.data_ptr<float>();
  const int64_t points = n * n, blocks = (tiles + BLOCK - 1) / BLOCK;
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> d(points * C), rows(points * C), out(BLOCK * points * C);
    for (int64_t block = begin; block < end; ++block) {
      const int64_t first = block * BLOCK, count = std::min(BLOCK, tiles - first);
      for (int64_t t = 0; t < count; ++t) {
        const auto [image, ty, tx] = place(first + t, tiles_h, tiles_w);
        for (int64_t i = 0; i < n; ++i) {  // the n x n patch, zeros outside the image
          const int64_t h = ty * m + i - pad;
          for (int64_t j = 0; j < n; ++j) {
            const int64_t w = tx * m + j - pad;
            float* dst = d.data() + (i * n + j) * C;
            if (h < 0 || h >= H || w < 0 || w >= W)
              std::fill(dst, dst + C, 0.0f);
            else
              std::memcpy(dst, xp + ((image * H + h) * W + w) * C, C * sizeof(float));
          }
        }
        for (int64_t a = 0; a < n; ++a)  // along its rows: rows[a][j] = sum_i BT[a][i] d[i][j]
          for (int64_t j = 0; j < n; ++j)
            combine(rows.data() + (a * n + j) * C, d.data() + j * C, n * C, B + a * n, n, C);
        for (int64_t a = 0; a < n; ++a)  // and its columns, into out[g][point][t]
          for (int64_t bb = 0; bb < n; ++bb)
            for (int64_t g = 0; g < groups; ++g)
              combine(out.data() + ((g * points + a * n + bb) * BLOCK + t) * cg,
                      rows.data() + a * n * C + g * cg, C, B + bb * n, n, cg);
      }
      for (int64_t row = 0; row < groups * points; ++row)  // one run per group and point
        std::memcpy(vp + (row * tiles + first) * cg, out.data() + row * BLOCK * cg,
                    count * cg * sizeof(float));
    }
  });
  return v;
}

// y[image][tile's row + u][tile's column + v][offset + o] = bias[o] +
//   sum_ab AT[u][a] AT[v][b] M[a n + b][tile][o], inside the output only: the products' results
// of one group back to the output's channels [offset, offset + M's columns).
void output_tiles(const at::Tensor& products, const at::Tensor& at_, const at::Tensor& bias,
                  at::Tensor& y, int64_t tiles_h, int64_t tiles_w, int64_t offset) {
  check_float_channels_last(y, "the output");
  const at::Tensor a = at_.to(at::kFloat).contiguous(), p = products.contiguous();
  const at::Tensor bs = bias.to(at::kFloat).contiguous();
  TORCH_CHECK(a.dim() == 2 && p.dim() == 3 && tiles_h >= 1 && tiles_w >= 1 && offset >= 0,
              "winograd_cpu.output_tiles: A^T must be a matrix, the products 3-D, and the tile "
              "counts positive");
  const int64_t m = a.size(0), n = a.size(1), og = p.size(2), tiles = p.size(1);
  const int64_t C = y.size(1), H = y.size(2), W = y.size(3), per_image = tiles_h * tiles_w;
  TORCH_CHECK(p.scalar_type() == at::kFloat && p.size(0) == n * n && offset + og <= C &&
                  bs.numel() == og && tiles == y.size(0) * per_image && tiles_h * m >= H &&
                  tiles_w * m >= W,
              "winograd_cpu.output_tiles: products (float32), tiles, bias and output do not "
              "agree");
  const float *pp = p.data_ptr<float>(), *A = a.data_ptr<float>(), *bp = bs.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, tiles, BLOCK, [&](int64_t begin, int64_t end) {
    std::vector<float> rows(m * n * og);
    for (int64_t tile = begin; tile < end; ++tile) {
      const auto [image, ty, tx] = place(tile, tiles_h, tiles_w);
      for (int64_t u = 0; u < m; ++u)  // rows[u][b] = sum_a AT[u][a] M[a n + b]
        for (int64_t b = 0; b < n; ++b)
          combine(rows.data() + (u * n + b) * og, pp + (b * tiles + tile) * og, n * tiles * og,
                  A + u * n, n, og);
      for (int64_t u = 0; u < m; ++u) {
        const int64_t h = ty * m + u;
        if (h >= H) break;
        for (int64_t v = 0; v < m; ++v) {
          const int64_t w = tx * m + v;
          if (w >= W) break;
          combine(yp + ((image * H + h) * W + w) * C + offset, rows.data() + u * n * og, og,
                  A + v * n, n, og, bp);
        }
      }
    }
  });
}

}  // namespace

TORCH_LIBRARY(alexnet_winograd, m) {
  m.def(
      "input_tiles(Tensor x, Tensor bt, int m, int pad, int groups, int tiles_h, int tiles_w) "
      "-> Tensor");
  m.def(
      "output_tiles(Tensor products, Tensor at, Tensor bias, Tensor(a!) y, int tiles_h, "
      "int tiles_w, int offset) -> ()");
}

TORCH_LIBRARY_IMPL(alexnet_winograd, CPU, m) {
  m.impl("input_tiles", input_tiles);
  m.impl("output_tiles", output_tiles);
}
