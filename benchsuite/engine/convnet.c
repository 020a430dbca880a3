/* Forward and backward of K small convolutional networks (the LeNet family), one network and one
   image at a time, everything in cache (engine/stacked_conv.py's "native" formulation; built and
   loaded by engine/native.py).

   Why: at batch size 2 a LeNet step is a few hundred thousand multiply-adds per network. The torch
   formulations pay for it in memory traffic (im2col patches 25x the activations) and per-op
   overhead; here a network's weights and activations stay in L1/L2 and each output is summed in
   registers. Each network is computed by itself, in a fixed order written below, so a network
   trained in a stack equals it trained alone, bit for bit, whatever the stack or thread. Vector
   code is GCC's generic vector extension (8 float lanes): the same sums in the same order on
   every x86-64 level and architecture, so the bits do not depend on the machine's vector width;
   the build has no -march and no -ffast-math, and -ffp-contract=off keeps multiply and add apart.
   Speed comes from blocking, never from reordering: a blocked loop computes several outputs at
   once (rows, channels, kernel taps) as independent sums that share their loads, each added in
   the order of the plain one-at-a-time loop, so blocking leaves every bit as it was (2.0-2.2x
   over the unblocked kernel at LeNet widths 1/6 to 1, then 1.1-1.7x more with fewer padding
   lanes and less set-up per row, docs/performance.md).

   Ops (in the order of the network): 0 conv (unit stride, no padding, kh x kw), 1 max pool 2x2
   stride 2 (floor; the first maximum of a window wins ties, NaN wins, as aten's max_pool2d),
   2 ReLU, 3 linear. Activations are [C, H, W] per image, flattened in that order for the linear
   layers. The head is log-softmax; the backward starts from d loss / d log-probabilities.
   BatchNorm networks (ResNet4: bs_resnet_gradients, bs_resnet_logits, bs_resnet_margin_norms)
   add 4 zero padding (kh pixels each side), 5 BatchNorm in train mode, 6 save and 7 add (a
   residual block's x + body(x); add's kh is the index of its save op), 8 global max pool, 9
   scale and 10 an eval-mode BatchNorm ((x - mean) * invstd * gamma + beta as torch computes it;
   weight: C means then C invstds, bias: C gammas then C betas, set by the caller). Training runs
   a batch at a time, op by op, since a BatchNorm needs its whole batch before the next op. */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Each hot function also built for AVX2 and picked at load time (GCC's target_clones): the same
   operations in the same order, wider registers (measured 1.7-2.0x over the SSE2 baseline). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(BENCHSUITE_BASELINE_ONLY) /* that: tests build the baseline alone to compare */
#define HOT __attribute__((target_clones("avx2", "default")))
#define FMA __attribute__((target_clones("fma", "default"))) /* fmaf as one vector instruction */
#else
#define HOT
#define FMA
#endif

typedef float v8 __attribute__((vector_size(32)));

/* Blocked loops: several independent sums at once, each in the order of the one-at-a-time loop. */
#define INLINE static inline __attribute__((always_inline))
#define ROWS 4 /* output rows summed at once: independent chains for the adders */
#define OUTS 2 /* output channels summed at once (the forward) */
#define CHANNELS 3 /* input-gradient channels summed at once */
#define TAPS 8 /* weight-gradient taps summed at once (sum8x8 takes eight) */

static inline v8 load8(const float *p) {
    v8 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline v8 splat(float x) { return (v8){x, x, x, x, x, x, x, x}; }

static inline float sum8(v8 v) {
    return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
}

typedef int32_t i8 __attribute__((vector_size(32)));

/* Lane j: sum8(a[j]), the same additions in the same tree, eight at a time (14 shuffles and 7
   adds where eight sum8 take 56 adds and lane extracts). */
static inline v8 sum8x8(const v8 *a) {
    const i8 even = {0, 8, 2, 10, 4, 12, 6, 14}, odd = {1, 9, 3, 11, 5, 13, 7, 15};
    const i8 low = {0, 1, 8, 9, 4, 5, 12, 13}, high = {2, 3, 10, 11, 6, 7, 14, 15};
    const i8 front = {0, 1, 2, 3, 8, 9, 10, 11}, back = {4, 5, 6, 7, 12, 13, 14, 15};
    v8 pair[4], quad[2];
    for (int i = 0; i < 4; i++) /* [a0(0+1), a1(0+1), a0(2+3), a1(2+3), ...] */
        pair[i] = __builtin_shuffle(a[2 * i], a[2 * i + 1], even) +
                  __builtin_shuffle(a[2 * i], a[2 * i + 1], odd);
    for (int i = 0; i < 2; i++) /* [a0((0+1)+(2+3)) .. a3(..), a0((4+5)+(6+7)) .. a3(..)] */
        quad[i] = __builtin_shuffle(pair[2 * i], pair[2 * i + 1], low) +
                  __builtin_shuffle(pair[2 * i], pair[2 * i + 1], high);
    return __builtin_shuffle(quad[0], quad[1], front) + __builtin_shuffle(quad[0], quad[1], back);
}

typedef struct {
    int64_t kind;            /* 0 conv, 1 pool, 2 relu, 3 linear */
    int64_t cin, h, w;       /* input: channels (features for linear), height, width */
    int64_t cout, kh, kw;    /* conv: output channels and kernel; linear: output features */
    float *weight, *bias;    /* network 0's; network k's at + k * weight_stride (bias_stride) */
    float *grad_weight, *grad_bias;
    int64_t weight_stride, bias_stride;
    double factor;           /* BatchNorm: eps; scale: the factor */
} Op;

static int64_t in_size(const Op *op) { return op->kind == 3 ? op->cin : op->cin * op->h * op->w; }

/* One network's weights of a conv, linear or BatchNorm op (0 for the others); its biases are
   op->cout (a BatchNorm's cout is its channels) */
static int64_t weight_count(const Op *op) {
    if (op->kind == 5) return op->cout;
    if (op->kind != 0 && op->kind != 3) return 0;
    return op->cout * op->cin * (op->kind == 0 ? op->kh * op->kw : 1);
}

static int64_t out_size(const Op *op) {
    switch (op->kind) {
    case 0: return op->cout * (op->h - op->kh + 1) * (op->w - op->kw + 1);
    case 1: return op->cin * (op->h / 2) * (op->w / 2);
    case 3: return op->cout;
    case 4: return op->cin * (op->h + 2 * op->kh) * (op->w + 2 * op->kh);
    case 8: return op->cin;
    default: return op->cin * op->h * op->w; /* 2 ReLU, 5 BatchNorm, 6 save, 7 add, 9 scale */
    }
}

static void conv_forward_narrow(const Op *op, const float *w, const float *b, const float *in,
                                float *out);
static int64_t cout_lanes(const Op *op);

/* Rows y .. y+R-1 of output channels co .. co+Q-1 over columns x .. x+7: Q x R sums in registers
   (independent chains for the adders; the Q channels share each input load), each in the order of
   the one-output loop below (start, then every tap of every input channel). */
INLINE void conv_rows(const Op *op, const float *w, const float *b, int64_t co, int Q,
                      const float *in, float *out, int64_t y, int64_t x, int R) {
    int64_t ho = op->h - op->kh + 1, wo = op->w - op->kw + 1, taps = op->kh * op->kw;
    int64_t kernels = op->cin * taps; /* one output channel's weights */
    v8 acc[OUTS][ROWS];
    for (int q = 0; q < Q; q++)
        for (int r = 0; r < R; r++) acc[q][r] = splat(b ? b[co + q] : 0.0f);
    for (int64_t ci = 0; ci < op->cin; ci++) {
        const float *wk = w + co * kernels + ci * taps;
        for (int64_t ky = 0; ky < op->kh; ky++) {
            const float *base = in + (ci * op->h + y + ky) * op->w + x;
            for (int64_t kx = 0; kx < op->kw; kx++) {
                v8 v[ROWS];
                for (int r = 0; r < R; r++) v[r] = load8(base + r * op->w + kx);
                for (int q = 0; q < Q; q++) {
                    float wv = wk[q * kernels + ky * op->kw + kx];
                    for (int r = 0; r < R; r++) acc[q][r] += wv * v[r];
                }
            }
        }
    }
    for (int q = 0; q < Q; q++)
        for (int r = 0; r < R; r++)
            memcpy(out + ((co + q) * ho + y + r) * wo + x, &acc[q][r], sizeof acc[q][r]);
}

HOT static void conv_forward(const Op *op, const float *w, const float *b, const float *in,
                             float *out) {
    int64_t ho = op->h - op->kh + 1, wo = op->w - op->kw + 1;
    /* OUTS channels, 8 columns and ROWS rows at a time (then fewer); the columns past the last 8
       in the 8 that end the row (each output is the same sum, so recomputing some is harmless) */
    for (int64_t co = 0, Q; co < op->cout && wo >= 8; co += Q) {
        Q = op->cout - co >= OUTS ? OUTS : 1;
        for (int64_t x = 0; x < wo; x += 8) {
            int64_t y = 0, left = x + 8 <= wo ? x : wo - 8;
            for (; y + ROWS <= ho; y += ROWS) {
                if (Q == OUTS)
                    conv_rows(op, w, b, co, OUTS, in, out, y, left, ROWS);
                else
                    conv_rows(op, w, b, co, 1, in, out, y, left, ROWS);
            }
            for (; y < ho; y++) {
                if (Q == OUTS)
                    conv_rows(op, w, b, co, OUTS, in, out, y, left, 1);
                else
                    conv_rows(op, w, b, co, 1, in, out, y, left, 1);
            }
        }
    }
    if (wo < 8) conv_forward_narrow(op, w, b, in, out);
}

/* Columns x .. x+P-1 of output row y, output channels block .. block+7 as the lanes (weights
   transposed: wt[f * lanes + co] for flat tap f), each output summed as the one-at-a-time loop
   would: its bias, then w * x for every tap (ky, kx) of every input channel in order. */
INLINE void conv_narrow_cols(const Op *op, const float *wt, v8 start, const float *in, float *out,
                             int64_t block, int64_t y, int64_t x, int P) {
    int64_t ho = op->h - op->kh + 1, wo = op->w - op->kw + 1, lanes = cout_lanes(op);
    v8 acc[4];
    for (int p = 0; p < P; p++) acc[p] = start;
    const float *wf = wt + block;
    for (int64_t ci = 0; ci < op->cin; ci++)
        for (int64_t ky = 0; ky < op->kh; ky++) {
            const float *row = in + (ci * op->h + y + ky) * op->w + x;
            for (int64_t kx = 0; kx < op->kw; kx++, wf += lanes) {
                v8 wv = load8(wf);
                for (int p = 0; p < P; p++) acc[p] += wv * splat(row[kx + p]);
            }
        }
    for (int p = 0; p < P; p++)
        for (int64_t q = 0; q < 8 && block + q < op->cout; q++)
            out[((block + q) * ho + y) * wo + x + p] = acc[p][q];
}

/* A convolution whose outputs are narrower than 8 columns (ResNet4's 7x7 and 3x3 planes): 8
   output channels at a time as the lanes where a row has no 8 columns to fill them; the same
   sums in the same order as one output at a time, so the same bits. */
HOT static void conv_forward_narrow(const Op *op, const float *w, const float *b, const float *in,
                                    float *out) {
    int64_t ho = op->h - op->kh + 1, wo = op->w - op->kw + 1, lanes = cout_lanes(op);
    int64_t kernels = op->cin * op->kh * op->kw;
    float *wt = malloc(sizeof(float) * kernels * lanes);
    if (!wt) { /* no memory for the transposed weights: one output at a time */
        for (int64_t co = 0; co < op->cout; co++)
            for (int64_t y = 0; y < ho; y++)
                for (int64_t x = 0; x < wo; x++) {
                    float acc = b ? b[co] : 0.0f;
                    for (int64_t ci = 0; ci < op->cin; ci++)
                        for (int64_t ky = 0; ky < op->kh; ky++)
                            for (int64_t kx = 0; kx < op->kw; kx++)
                                acc += w[(co * op->cin + ci) * op->kh * op->kw + ky * op->kw + kx] *
                                       in[(ci * op->h + y + ky) * op->w + x + kx];
                    out[(co * ho + y) * wo + x] = acc;
                }
        return;
    }
    for (int64_t f = 0; f < kernels; f++)
        for (int64_t co = 0; co < lanes; co++)
            wt[f * lanes + co] = co < op->cout ? w[co * kernels + f] : 0.0f;
    for (int64_t block = 0; block < lanes; block += 8) {
        v8 start = splat(0.0f);
        for (int q = 0; q < 8 && b && block + q < op->cout; q++) start[q] = b[block + q];
        for (int64_t y = 0; y < ho; y++) {
            int64_t x = 0;
            for (; x + 4 <= wo; x += 4) conv_narrow_cols(op, wt, start, in, out, block, y, x, 4);
            for (; x < wo; x++) conv_narrow_cols(op, wt, start, in, out, block, y, x, 1);
        }
    }
    free(wt);
}

/* Weight gradients of taps t .. t+T-1 (flattened ky * kw + kx) of kernel (co, ci): T dot
   products of grad_out's plane with the shifted input, each summed as the one-tap loop would:
   the whole 8-column blocks row by row into a vector, the columns past them into a scalar, then
   gw += sum8(vector) + scalar. Block i (of `blocks`, in row order) is at at[2i] in grad_out's
   plane and at at[2i + 1] in the input's; tap t's scalar is tails[t * stride] (conv_tails), or 0
   where tails is NULL (no columns past the blocks). */
INLINE void conv_weight_taps(
    const float *src, const float *g, const int64_t *shifts, const int32_t *at, int64_t blocks,
    const float *tails, int64_t stride, float *gw, int64_t t, int T) {
    v8 acc[TAPS];
    const float *tap[TAPS]; /* tap t + j's input plane, shifted */
    for (int j = 0; j < T; j++) {
        acc[j] = (v8){0, 0, 0, 0, 0, 0, 0, 0};
        tap[j] = src + shifts[t + j];
    }
    for (int64_t i = 0; i < blocks; i++) { /* the blocks of all rows, one loop */
        v8 gv = load8(g + at[2 * i]);
        int64_t o = at[2 * i + 1];
        for (int j = 0; j < T; j++) acc[j] += gv * load8(tap[j] + o);
    }
    float tail[TAPS];
    for (int j = 0; j < T; j++) tail[j] = tails ? tails[(t + j) * stride] : 0.0f;
    if (T == 8) { /* gw[t + j] += sum8(acc[j]) + tail[j], lane by lane */
        v8 lanes, sums = sum8x8(acc), into = load8(gw + t);
        memcpy(&lanes, tail, sizeof lanes);
        into += sums + lanes;
        memcpy(gw + t, &into, sizeof into);
    } else {
        for (int j = 0; j < T; j++) gw[t + j] += sum8(acc[j]) + tail[j];
    }
}

/* Output channels rounded up to a whole number of 8-lane vectors (conv_tails's lanes) */
static int64_t cout_lanes(const Op *op) { return (op->cout + 7) / 8 * 8; }

/* The scalar part of every weight gradient of a convolution whose output rows end in `rest`
   columns past their 8-column blocks: for output channel co and flat tap f (ci * kh * kw + ky * kw
   + kx), tails[f * lanes + co] = the sum over rows y, then those columns x, of
   grad_out[co][y][x] * input[ci][y + ky][x + kx], from 0 in that order (the one-tap loop's scalar
   sum). The output channels are the lanes (grad_out's rest columns transposed into `columns`,
   [ho * rest, lanes], lanes = cout rounded up to 8, first), eight taps at once: one broadcast
   input value, one load and one vector multiply-add per column where the taps-as-lanes sum
   gathered eight scattered input values. Writes both into `scratch` (conv_tails_size floats: the
   columns, then the tails) and returns where the tails start. */
INLINE float *conv_tails(const Op *op, const float *in, const float *grad_out,
                         const int64_t *shifts, float *scratch) {
    int64_t ho = op->h - op->kh + 1, wo = op->w - op->kw + 1, rest = wo % 8;
    int64_t taps = op->kh * op->kw, total = op->cin * taps, lanes = cout_lanes(op);
    float *columns = scratch, *tails = scratch + ho * rest * lanes;
    memset(columns, 0, sizeof(float) * ho * rest * lanes);
    for (int64_t co = 0; co < op->cout; co++)
        for (int64_t y = 0; y < ho; y++)
            for (int64_t x = 0; x < rest; x++)
                columns[(y * rest + x) * lanes + co] = grad_out[(co * ho + y) * wo + wo - rest + x];
    for (int64_t f = 0; f < total; f += TAPS) {
        int64_t n = total - f < TAPS ? total - f : TAPS;
        const float *tap[TAPS]; /* flat tap f + j's input, shifted; spare lanes repeat tap f */
        for (int j = 0; j < TAPS; j++) {
            int64_t u = f + (j < n ? j : 0);
            tap[j] = in + u / taps * op->h * op->w + shifts[u % taps] + wo - rest;
        }
        for (int64_t block = 0; block < lanes; block += 8) {
            v8 acc[TAPS];
            for (int j = 0; j < TAPS; j++) acc[j] = (v8){0, 0, 0, 0, 0, 0, 0, 0};
            for (int64_t y = 0; y < ho; y++)
                for (int64_t x = 0; x < rest; x++) {
                    v8 gv = load8(columns + (y * rest + x) * lanes + block);
                    int64_t o = y * op->w + x;
                    for (int j = 0; j < TAPS; j++) acc[j] += splat(tap[j][o]) * gv;
                }
            for (int j = 0; j < n; j++) memcpy(tails + (f + j) * lanes + block, &acc[j], 32);
        }
    }
    return tails;
}

/* The input gradient is gathered from a zero-padded copy of the output gradient whose rows are
   as wide as the input's (the output's wo columns, then kw - 1 zeros), with kh - 1 zero rows above
   and below: the element at flat input index i (= y * w + x) takes tap (ky, kx) of output channel
   co from plane co at LEAD(op) + i + (kh - 1 - ky) * w - kx. A column x - kx < 0 lands in the
   zeros ending the row above, so flat blocks of 8 input elements run across rows with no padding
   lanes. kw - 1 zeros before the first row and 8 after the last keep every load in the plane. */
#define LEAD(op) ((op)->kw - 1)

static int64_t conv_pad_plane(const Op *op) { return LEAD(op) + (op->h + op->kh - 1) * op->w + 8; }

static int64_t conv_pad_size(const Op *op) { return op->cout * conv_pad_plane(op); }

/* conv_tails's buffers: the transposed columns, then the tails */
static int64_t conv_tails_size(const Op *op) {
    int64_t ho = op->h - op->kh + 1, rest = (op->w - op->kw + 1) % 8;
    return rest ? (ho * rest + op->cin * op->kh * op->kw) * cout_lanes(op) : 0;
}

/* The scratch conv_backward takes: the padded output gradient, or conv_tails's buffers */
static int64_t conv_scratch_size(const Op *op) {
    int64_t pad = conv_pad_size(op), tails = conv_tails_size(op);
    return pad > tails ? pad : tails;
}

/* Input gradient of channels ci .. ci+C-1 at flat indices i .. i+8R-1 (`n` of them real): each
   element sums w * grad_out over (co, ky, kx) in the order the scattering loop it replaces added
   them. Products with the padding (w * 0 = +-0) leave a sum that started at +0 unchanged (it is
   never -0), so the bits are the scatter's for every finite weight (a non-finite weight makes the
   step NaN either way); kernel rows that meet only padding rows for every element here are
   skipped. */
INLINE void conv_input_flat(
    const Op *op, const float *w, const float *pad, int64_t ci, int C, int64_t i, int R,
    int64_t n, float *grad_in) {
    int64_t ho = op->h - op->kh + 1, plane = conv_pad_plane(op), taps = op->kh * op->kw;
    int64_t first_row = i / op->w, last_row = (i + n - 1) / op->w;
    int64_t ky_first = first_row - ho + 1 > 0 ? first_row - ho + 1 : 0;
    int64_t ky_end = last_row + 1 < op->kh ? last_row + 1 : op->kh;
    v8 acc[CHANNELS][ROWS];
    for (int c = 0; c < C; c++)
        for (int r = 0; r < R; r++) acc[c][r] = (v8){0, 0, 0, 0, 0, 0, 0, 0};
    for (int64_t co = 0; co < op->cout; co++) {
        const float *wk = w + (co * op->cin + ci) * taps;
        for (int64_t ky = ky_first; ky < ky_end; ky++) {
            const float *row = pad + co * plane + LEAD(op) + i + (op->kh - 1 - ky) * op->w;
            for (int64_t kx = 0; kx < op->kw; kx++) {
                v8 g[ROWS];
                for (int r = 0; r < R; r++) g[r] = load8(row + 8 * r - kx);
                for (int c = 0; c < C; c++) {
                    float wv = wk[c * taps + ky * op->kw + kx];
                    for (int r = 0; r < R; r++) acc[c][r] += wv * g[r];
                }
            }
        }
    }
    int64_t size = op->h * op->w;
    for (int c = 0; c < C; c++)
        for (int r = 0; r < R && 8 * r < n; r++) { /* only elements inside the image are kept */
            int64_t lanes = n - 8 * r < 8 ? n - 8 * r : 8;
            memcpy(grad_in + (ci + c) * size + i + 8 * r, &acc[c][r], sizeof(float) * lanes);
        }
}

/* grad_out [cout, ho, wo] -> weight and bias gradients (added), input gradient (if grad_in; `pad`
   is scratch for conv_scratch_size floats) */
HOT static void conv_backward(const Op *op, const float *w, const float *in,
                              const float *grad_out, float *gw, float *gb, float *grad_in,
                              float *pad) {
    int64_t ho = op->h - op->kh + 1, wo = op->w - op->kw + 1, taps = op->kh * op->kw;
    int64_t shifts[taps], blocks = ho * (wo / 8);
    int32_t at[2 * blocks + 1]; /* the 8-column blocks of grad_out: plane offset, input offset */
    for (int64_t t = 0; t < taps; t++) shifts[t] = (t / op->kw) * op->w + t % op->kw;
    for (int64_t i = 0; i < blocks; i++) {
        int64_t y = i / (wo / 8), x = i % (wo / 8) * 8;
        at[2 * i] = (int32_t)(y * wo + x), at[2 * i + 1] = (int32_t)(y * op->w + x);
    }
    int64_t lanes = cout_lanes(op);
    /* the columns past the blocks, summed first */
    float *tails = gw && wo % 8 ? conv_tails(op, in, grad_out, shifts, pad) : NULL;
    for (int64_t co = 0; co < op->cout; co++) {
        const float *g = grad_out + co * ho * wo;
        if (gb) {
            v8 acc = {0, 0, 0, 0, 0, 0, 0, 0};
            float tail = 0.0f;
            int64_t n = ho * wo, i = 0;
            for (; i + 8 <= n; i += 8) acc += load8(g + i);
            for (; i < n; i++) tail += g[i];
            gb[co] += sum8(acc) + tail;
        }
        for (int64_t ci = 0; gw && ci < op->cin; ci++) {
            const float *src = in + ci * op->h * op->w;
            const float *tk = tails ? tails + ci * taps * lanes + co : NULL;
            float *gk = gw + (co * op->cin + ci) * taps;
            int64_t t = 0;
            for (; t + TAPS <= taps; t += TAPS)
                conv_weight_taps(src, g, shifts, at, blocks, tk, lanes, gk, t, TAPS);
            for (; t < taps; t++)
                conv_weight_taps(src, g, shifts, at, blocks, tk, lanes, gk, t, 1);
        }
    }
    if (!grad_in) return;
    int64_t plane = conv_pad_plane(op), size = op->h * op->w;
    memset(pad, 0, sizeof(float) * op->cout * plane);
    for (int64_t co = 0; co < op->cout; co++)
        for (int64_t y = 0; y < ho; y++)
            memcpy(pad + co * plane + LEAD(op) + (y + op->kh - 1) * op->w,
                   grad_out + (co * ho + y) * wo, sizeof(float) * wo);
    for (int64_t ci = 0, C; ci < op->cin; ci += C) {
        C = op->cin - ci >= CHANNELS ? CHANNELS : 1; /* channels left over go one at a time */
        int64_t i = 0;
        for (; i + 8 * ROWS <= size; i += 8 * ROWS) {
            if (C == CHANNELS)
                conv_input_flat(op, w, pad, ci, CHANNELS, i, ROWS, 8 * ROWS, grad_in);
            else
                conv_input_flat(op, w, pad, ci, 1, i, ROWS, 8 * ROWS, grad_in);
        }
        for (; i < size; i += 8) {
            int64_t n = size - i < 8 ? size - i : 8;
            if (C == CHANNELS)
                conv_input_flat(op, w, pad, ci, CHANNELS, i, 1, n, grad_in);
            else
                conv_input_flat(op, w, pad, ci, 1, i, 1, n, grad_in);
        }
    }
}

HOT static void pool_forward(const Op *op, const float *in, float *out, int32_t *arg) {
    int64_t hp = op->h / 2, wp = op->w / 2;
    for (int64_t c = 0; c < op->cin; c++)
        for (int64_t y = 0; y < hp; y++)
            for (int64_t x = 0; x < wp; x++) {
                int64_t corner = (c * op->h + 2 * y) * op->w + 2 * x;
                int64_t cand[4] = {corner, corner + 1, corner + op->w, corner + op->w + 1};
                int64_t best = cand[0];
                float value = in[best];
                for (int j = 1; j < 4; j++) {
                    float v = in[cand[j]];
                    if (v > value || isnan(v)) {
                        value = v;
                        best = cand[j];
                    }
                }
                int64_t o = (c * hp + y) * wp + x;
                out[o] = value;
                arg[o] = (int32_t)best;
            }
}

HOT static void linear_forward(const Op *op, const float *w, const float *b, const float *in,
                               float *out) {
    for (int64_t o = 0; o < op->cout; o++) {
        const float *row = w + o * op->cin;
        v8 acc = {0, 0, 0, 0, 0, 0, 0, 0};
        float tail = 0.0f;
        int64_t k = 0;
        for (; k + 8 <= op->cin; k += 8) acc += load8(row + k) * load8(in + k);
        for (; k < op->cin; k++) tail += row[k] * in[k];
        out[o] = (b ? b[o] : 0.0f) + (sum8(acc) + tail);
    }
}

HOT static void linear_backward(const Op *op, const float *w, const float *in, const float *g,
                                float *gw, float *gb, float *grad_in) {
    for (int64_t o = 0; gw && o < op->cout; o++) {
        float d = g[o];
        float *restrict row = gw + o * op->cin;
        for (int64_t k = 0; k < op->cin; k++) row[k] += d * in[k];
    }
    for (int64_t o = 0; gb && o < op->cout; o++) gb[o] += g[o];
    if (!grad_in) return;
    /* grad_in[k] = sum over o of w[o][k] * g[o], added in the order of o, four rows a pass */
    memset(grad_in, 0, sizeof(float) * op->cin);
    int64_t o = 0;
    for (; o + 4 <= op->cout; o += 4) {
        const float *restrict row = w + o * op->cin;
        float d0 = g[o], d1 = g[o + 1], d2 = g[o + 2], d3 = g[o + 3];
        float *restrict dst = grad_in;
        for (int64_t k = 0; k < op->cin; k++)
            dst[k] = (((dst[k] + row[k] * d0) + row[op->cin + k] * d1) +
                      row[2 * op->cin + k] * d2) + row[3 * op->cin + k] * d3;
    }
    for (; o < op->cout; o++) {
        float d = g[o];
        const float *restrict row = w + o * op->cin;
        float *restrict dst = grad_in;
        for (int64_t k = 0; k < op->cin; k++) dst[k] += row[k] * d;
    }
}

HOT static void relu_backward(const float *out, const float *grad, float *grad_in, int64_t n) {
    for (int64_t e = 0; e < n; e++) grad_in[e] = out[e] <= 0.0f ? 0.0f : grad[e];
}

/* 2: bs_convnet_margin_norms; 3: bs_convnet_sgd_steps, bs_sgd_update; 4: bs_resnet_gradients,
   bs_resnet_margin_norms, bs_resnet_logits */
int64_t bs_convnet_version(void) { return 4; }

/* Where one image's activations lie: act[offset[i]] is the input of op i, act[offset[count]] the
   logits; `largest` the longest of them (a gradient buffer), `pools` the pool outputs (their
   argmax indices), `padded` the largest zero-padded output gradient of a convolution. */
typedef struct {
    int64_t *offset, total, largest, pools, padded, image;
} Layout;

static int layout_of(const Op *ops, int64_t count, int64_t classes, Layout *l) {
    l->total = 0, l->largest = classes, l->pools = 0, l->padded = 1;
    l->image = ops[0].cin * ops[0].h * ops[0].w;
    l->offset = malloc(sizeof(int64_t) * (count + 2));
    if (!l->offset) return -1;
    for (int64_t i = 0; i < count; i++) {
        int64_t in = in_size(&ops[i]);
        l->offset[i] = l->total;
        l->total += in;
        if (in > l->largest) l->largest = in;
        if (ops[i].kind == 1) l->pools += out_size(&ops[i]);
        if (ops[i].kind == 0 && conv_scratch_size(&ops[i]) > l->padded)
            l->padded = conv_scratch_size(&ops[i]);
    }
    l->offset[count] = l->total;
    l->total += classes;
    return 0;
}

/* Network k's forward on the image at a[offset[0]]: every op's output, the pools' argmax. */
static void forward_image(const Op *ops, int64_t count, int64_t k, const Layout *l, float *a,
                          int32_t *pa) {
    int64_t pool_at = 0;
    for (int64_t i = 0; i < count; i++) {
        const Op *op = &ops[i];
        const float *w = op->weight ? op->weight + k * op->weight_stride : NULL;
        const float *b = op->bias ? op->bias + k * op->bias_stride : NULL;
        float *in = a + l->offset[i], *out = a + l->offset[i + 1];
        if (op->kind == 0) {
            conv_forward(op, w, b, in, out);
        } else if (op->kind == 1) {
            pool_forward(op, in, out, pa + pool_at);
            pool_at += out_size(op);
        } else if (op->kind == 2) { /* ReLU; a NaN stays NaN */
            for (int64_t n = out_size(op), e = 0; e < n; e++) out[e] = in[e] < 0.0f ? 0.0f : in[e];
        } else {
            linear_forward(op, w, b, in, out);
        }
    }
}

/* Network k's backward from d/d(logits) in *grad, after forward_image: adds each op's weight and
   bias gradients (if weights), and leaves d/d(image) in *grad (if to_input; else the last input
   gradient computed). grad and next are buffers of l->largest floats, swapped as it goes. */
static void backward_image(const Op *ops, int64_t count, int64_t k, const Layout *l,
                           const float *a, const int32_t *pa, float **grad, float **next,
                           float *pad, int weights, int to_input) {
    int64_t pool_at = l->pools;
    for (int64_t i = count - 1; i >= 0; i--) {
        const Op *op = &ops[i];
        const float *in = a + l->offset[i], *out = a + l->offset[i + 1];
        int64_t n_in = in_size(op);
        float *grad_in = i > 0 || to_input ? *next : NULL, *g = *grad;
        const float *w = op->weight ? op->weight + k * op->weight_stride : NULL;
        float *gw = weights && op->grad_weight ? op->grad_weight + k * op->weight_stride : NULL;
        float *gb = weights && op->grad_bias ? op->grad_bias + k * op->bias_stride : NULL;
        if (op->kind == 0) {
            conv_backward(op, w, in, g, gw, gb, grad_in, pad);
        } else if (op->kind == 3) {
            linear_backward(op, w, in, g, gw, gb, grad_in);
        } else if (op->kind == 2) { /* aten's threshold_backward: 0 where output <= 0 */
            if (grad_in) relu_backward(out, g, grad_in, n_in);
        } else {
            int64_t n_out = out_size(op);
            pool_at -= n_out;
            if (grad_in) {
                memset(grad_in, 0, sizeof(float) * n_in);
                for (int64_t e = 0; e < n_out; e++) grad_in[pa[pool_at + e]] += g[e];
            }
        }
        if (grad_in) {
            *next = g;
            *grad = grad_in;
        }
    }
}

/* One call's buffers: a batch's activations, two gradient buffers (swapped as the backward goes),
   the pools' argmax and a convolution's padded output gradient. */
typedef struct {
    float *act, *grad, *next, *pad;
    int32_t *arg;
} Scratch;

static void scratch_free(Layout *l, Scratch *s) {
    free(l->offset); free(s->act); free(s->grad); free(s->next); free(s->arg); free(s->pad);
}

static int scratch_of(const Op *ops, int64_t count, int64_t classes, int64_t batch, Layout *l,
                      Scratch *s) {
    memset(s, 0, sizeof *s);
    if (layout_of(ops, count, classes, l) != 0) return -1;
    s->act = malloc(sizeof(float) * l->total * batch);
    s->grad = malloc(sizeof(float) * l->largest), s->next = malloc(sizeof(float) * l->largest);
    s->arg = malloc(sizeof(int32_t) * (l->pools + 1) * batch);
    s->pad = malloc(sizeof(float) * l->padded);
    if (!s->act || !s->grad || !s->next || !s->arg || !s->pad) {
        scratch_free(l, s);
        return -1;
    }
    return 0;
}

/* Network k's weight and bias gradients set to zero (each step's are summed from there). */
static void zero_gradients(const Op *ops, int64_t count, int64_t k) {
    for (int64_t i = 0; i < count; i++) {
        const Op *op = &ops[i];
        int64_t n = weight_count(op);
        if (!n) continue;
        memset(op->grad_weight + k * op->weight_stride, 0, sizeof(float) * n);
        if (op->grad_bias) memset(op->grad_bias + k * op->bias_stride, 0, sizeof(float) * op->cout);
    }
}

/* Log-probabilities of logits z as aten's log-softmax: z - max - log(sum exp(z - max)) */
static void log_softmax(const float *z, float *lp, int64_t classes) {
    float top = z[0];
    for (int64_t c = 1; c < classes; c++) if (z[c] > top || isnan(z[c])) top = z[c];
    float sum = 0.0f;
    for (int64_t c = 0; c < classes; c++) sum += expf(z[c] - top);
    float log_sum = logf(sum);
    for (int64_t c = 0; c < classes; c++) lp[c] = z[c] - top - log_sum;
}

/* d loss / d logits from d loss / d log-probabilities lg: log-softmax's backward. */
static void log_softmax_backward(const float *lg, const float *lp, float *g, int64_t classes) {
    float total_grad = 0.0f;
    for (int64_t c = 0; c < classes; c++) total_grad += lg[c];
    for (int64_t c = 0; c < classes; c++) g[c] = lg[c] - expf(lp[c]) * total_grad;
}

/* Network k's weight and bias gradients over one batch (overwritten, summed over the batch in
   its order): image j at images[j], d loss / d log-probabilities at loss_grad[j] (classes each);
   the log-probabilities into log_probs [batch, classes]. */
static void network_gradients(const Op *ops, int64_t count, int64_t k, int64_t batch,
                              const Layout *l, Scratch *s, const float *const *images,
                              const float *const *loss_grad, float *log_probs, int64_t classes) {
    zero_gradients(ops, count, k);
    for (int64_t j = 0; j < batch; j++) {
        float *a = s->act + j * l->total;
        memcpy(a, images[j], sizeof(float) * l->image);
        forward_image(ops, count, k, l, a, s->arg + j * (l->pools + 1));
        log_softmax(a + l->offset[count], log_probs + j * classes, classes);
    }
    for (int64_t j = 0; j < batch; j++) {
        log_softmax_backward(loss_grad[j], log_probs + j * classes, s->grad, classes);
        backward_image(ops, count, k, l, s->act + j * l->total, s->arg + j * (l->pools + 1),
                       &s->grad, &s->next, s->pad, 1, 0);
    }
}

/* K networks, batch b. images: [K, b, image] (each network its own batch); loss_grad and
   log_probs: [K, b, classes]. Writes every op's weight and bias gradients of each network (summed
   over its batch) and the log-probabilities. Returns 0, or -1 if memory ran out. */
int64_t bs_convnet_gradients(const Op *ops, int64_t count, int64_t networks, int64_t batch,
                             const float *images, const float *loss_grad, float *log_probs,
                             int64_t classes) {
    Layout l;
    Scratch s;
    const float **in = malloc(sizeof(float *) * 2 * batch);
    if (!in || scratch_of(ops, count, classes, batch, &l, &s) != 0) {
        free(in);
        return -1;
    }
    const float **lg = in + batch;
    for (int64_t k = 0; k < networks; k++) {
        for (int64_t j = 0; j < batch; j++) {
            in[j] = images + (k * batch + j) * l.image;
            lg[j] = loss_grad + (k * batch + j) * classes;
        }
        network_gradients(ops, count, k, batch, &l, &s, in, lg, log_probs + k * batch * classes,
                          classes);
    }
    free(in);
    scratch_free(&l, &s);
    return 0;
}

/* p[e] <- fmaf(g[e], alpha, p[e]): torch's param.add_(grad, alpha=-lr) where torch computes it as
   one fused multiply-add per element (engine/native.py checks that at load, against torch). */
FMA void bs_sgd_update(float *p, const float *g, float alpha, int64_t n) {
    for (int64_t e = 0; e < n; e++) p[e] = fmaf(g[e], alpha, p[e]);
}

/* `steps` plain SGD steps of K networks (no momentum, no weight decay: DirectSGD's update,
   alpha[t] = -lr of step t), each network all its steps in one go, so its weights and gradients
   stay in cache from step to step; each step is bs_convnet_gradients' step for that network,
   then the update. images: [N, image] (the training set); index: [steps, K, b], the rows of
   network k's batch at step t; loss_table: [N, classes], d loss / d log-probabilities of a row
   (stacked_mlp.loss_gradient_table). The gradients of each network's last step stay in its
   gradient buffers. Returns 0, or -1 if memory ran out. */
int64_t bs_convnet_sgd_steps(const Op *ops, int64_t count, int64_t networks, int64_t batch,
                             int64_t steps, const float *images, const int64_t *index,
                             const float *loss_table, const float *alpha, int64_t classes) {
    Layout l;
    Scratch s;
    const float **in = malloc(sizeof(float *) * 2 * batch);
    float *log_probs = malloc(sizeof(float) * batch * classes);
    if (!in || !log_probs || scratch_of(ops, count, classes, batch, &l, &s) != 0) {
        free(in); free(log_probs);
        return -1;
    }
    const float **lg = in + batch;
    for (int64_t k = 0; k < networks; k++)
        for (int64_t t = 0; t < steps; t++) {
            const int64_t *rows = index + (t * networks + k) * batch;
            for (int64_t j = 0; j < batch; j++) {
                in[j] = images + rows[j] * l.image;
                lg[j] = loss_table + rows[j] * classes;
            }
            network_gradients(ops, count, k, batch, &l, &s, in, lg, log_probs, classes);
            for (int64_t i = 0; i < count; i++) {
                const Op *op = &ops[i];
                int64_t n = weight_count(op);
                if (!n) continue;
                bs_sgd_update(op->weight + k * op->weight_stride,
                              op->grad_weight + k * op->weight_stride, alpha[t], n);
                if (op->bias)
                    bs_sgd_update(op->bias + k * op->bias_stride,
                                  op->grad_bias + k * op->bias_stride, alpha[t], op->cout);
            }
        }
    free(in); free(log_probs);
    scratch_free(&l, &s);
    return 0;
}

/* K networks on the same n images ([n, image]): ||d(z1 - z0)/d image||_2 of each network's two
   logits z at each image, norms [K, n], the squares summed in double (the Lipschitz metric,
   metrics/normalized.py). Returns 0, -1 if memory ran out, -2 if the network has not two logits. */
int64_t bs_convnet_margin_norms(const Op *ops, int64_t count, int64_t networks, int64_t n,
                                const float *images, double *norms) {
    if (ops[count - 1].kind != 3 || ops[count - 1].cout != 2) return -2;
    Layout l;
    Scratch s;
    if (scratch_of(ops, count, 2, 1, &l, &s) != 0) return -1;
    for (int64_t k = 0; k < networks; k++)
        for (int64_t j = 0; j < n; j++) {
            memcpy(s.act, images + j * l.image, sizeof(float) * l.image);
            forward_image(ops, count, k, &l, s.act, s.arg);
            s.grad[0] = -1.0f, s.grad[1] = 1.0f;
            backward_image(ops, count, k, &l, s.act, s.arg, &s.grad, &s.next, s.pad, 0, 1);
            double squares = 0.0;
            for (int64_t e = 0; e < l.image; e++) squares += (double)s.grad[e] * s.grad[e];
            norms[k * n + j] = sqrt(squares);
        }
    scratch_free(&l, &s);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
   BatchNorm networks (ResNet4): the batch goes through the network op by op. Reductions of a
   plane are summed as 8-lane vectors (then the lanes as sum8, then the columns past them), the
   images' sums added in image order. */

INLINE float plane_sum(const float *p, int64_t n) {
    v8 acc = {0, 0, 0, 0, 0, 0, 0, 0};
    float tail = 0.0f;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) acc += load8(p + i);
    for (; i < n; i++) tail += p[i];
    return sum8(acc) + tail;
}

/* sum of (p - mean)^2 */
INLINE float plane_squares(const float *p, float mean, int64_t n) {
    v8 acc = {0, 0, 0, 0, 0, 0, 0, 0}, m = splat(mean);
    float tail = 0.0f;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        v8 d = load8(p + i) - m;
        acc += d * d;
    }
    for (; i < n; i++) tail += (p[i] - mean) * (p[i] - mean);
    return sum8(acc) + tail;
}

/* sum of g * x-hat, x-hat = (x - mean) * invstd */
INLINE float plane_dot_hat(const float *g, const float *x, float mean, float invstd, int64_t n) {
    v8 acc = {0, 0, 0, 0, 0, 0, 0, 0}, m = splat(mean), s = splat(invstd);
    float tail = 0.0f;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) acc += load8(g + i) * ((load8(x + i) - m) * s);
    for (; i < n; i++) tail += g[i] * ((x[i] - mean) * invstd);
    return sum8(acc) + tail;
}

/* Train-mode BatchNorm over the batch (images `stride` floats apart in act, input at `in`,
   output at `out`): per channel the mean, the biased variance (two passes), 1/sqrt(var + eps)
   into stats [mean C, var C, invstd C]; y = (x - mean) * invstd * gamma + beta. */
HOT static void bn_forward(const Op *op, const float *gamma, const float *beta, float *act,
                           int64_t stride, int64_t in, int64_t out, int64_t batch, float *stats) {
    int64_t plane = op->h * op->w, C = op->cin;
    float n = (float)(batch * plane), eps = (float)op->factor;
    for (int64_t c = 0; c < C; c++) {
        float sum = 0.0f, squares = 0.0f;
        for (int64_t j = 0; j < batch; j++)
            sum += plane_sum(act + j * stride + in + c * plane, plane);
        float mean = sum / n;
        for (int64_t j = 0; j < batch; j++)
            squares += plane_squares(act + j * stride + in + c * plane, mean, plane);
        float var = squares / n, invstd = 1.0f / sqrtf(var + eps), g = gamma[c], b = beta[c];
        stats[c] = mean, stats[C + c] = var, stats[2 * C + c] = invstd;
        for (int64_t j = 0; j < batch; j++) {
            const float *x = act + j * stride + in + c * plane;
            float *y = act + j * stride + out + c * plane;
            for (int64_t e = 0; e < plane; e++) y[e] = (x[e] - mean) * invstd * g + b;
        }
    }
}

/* Its backward: d gamma += sum g * x-hat, d beta += sum g; if grad_in, the input gradient
   gamma * invstd * ((g - sum g / n) - x-hat * sum(g * x-hat) / n). Gradients of image j at
   grad + j * largest (grad_in likewise). */
HOT static void bn_backward(const Op *op, const float *gamma, const float *act, int64_t stride,
                            int64_t in, const float *grad, float *grad_in, int64_t largest,
                            int64_t batch, const float *stats, float *gw, float *gb) {
    int64_t plane = op->h * op->w, C = op->cin;
    float n = (float)(batch * plane);
    for (int64_t c = 0; c < C; c++) {
        float mean = stats[c], invstd = stats[2 * C + c], sum = 0.0f, dot = 0.0f;
        for (int64_t j = 0; j < batch; j++) {
            const float *g = grad + j * largest + c * plane, *x = act + j * stride + in + c * plane;
            sum += plane_sum(g, plane);
            dot += plane_dot_hat(g, x, mean, invstd, plane);
        }
        if (gw) gw[c] += dot;
        if (gb) gb[c] += sum;
        if (!grad_in) continue;
        float scale = gamma[c] * invstd, mean_g = sum / n, mean_dot = dot / n;
        for (int64_t j = 0; j < batch; j++) {
            const float *g = grad + j * largest + c * plane, *x = act + j * stride + in + c * plane;
            float *d = grad_in + j * largest + c * plane;
            for (int64_t e = 0; e < plane; e++)
                d[e] = scale * ((g[e] - mean_g) - (x[e] - mean) * invstd * mean_dot);
        }
    }
}

/* Per-image ops of a BatchNorm network's forward (all but BatchNorm): op i of network k on the
   image whose activations start at a. */
HOT static void forward_op(const Op *ops, int64_t i, int64_t k, const Layout *l, float *a,
                           int32_t *pa) {
    const Op *op = &ops[i];
    const float *w = op->weight ? op->weight + k * op->weight_stride : NULL;
    const float *b = op->bias ? op->bias + k * op->bias_stride : NULL;
    float *in = a + l->offset[i], *out = a + l->offset[i + 1];
    int64_t n = in_size(op), plane = op->h * op->w;
    switch (op->kind) {
    case 0: conv_forward(op, w, b, in, out); break;
    case 1: pool_forward(op, in, out, pa); break;
    case 2: for (int64_t e = 0; e < n; e++) out[e] = in[e] < 0.0f ? 0.0f : in[e]; break;
    case 3: linear_forward(op, w, b, in, out); break;
    case 4: { /* zero padding */
        int64_t p = op->kh, wp = op->w + 2 * p, hp = op->h + 2 * p;
        memset(out, 0, sizeof(float) * op->cin * hp * wp);
        for (int64_t c = 0; c < op->cin; c++)
            for (int64_t y = 0; y < op->h; y++)
                memcpy(out + (c * hp + y + p) * wp + p, in + (c * op->h + y) * op->w,
                       sizeof(float) * op->w);
        break;
    }
    case 6: memcpy(out, in, sizeof(float) * n); break;
    case 7: { /* the saved x (save op's input) + body(x) */
        const float *saved = a + l->offset[op->kh];
        for (int64_t e = 0; e < n; e++) out[e] = saved[e] + in[e];
        break;
    }
    case 8: /* the maximum of each plane; NaN wins, as amax */
        for (int64_t c = 0; c < op->cin; c++) {
            const float *p = in + c * plane;
            float top = p[0];
            for (int64_t e = 1; e < plane; e++) if (p[e] > top || isnan(p[e])) top = p[e];
            out[c] = top;
        }
        break;
    case 9: {
        float f = (float)op->factor;
        for (int64_t e = 0; e < n; e++) out[e] = in[e] * f;
        break;
    }
    case 10:
        for (int64_t c = 0, C = op->cin; c < C; c++) {
            float mean = w[c], invstd = w[C + c], gamma = b[c], beta = b[C + c];
            for (int64_t e = 0; e < plane; e++)
                out[c * plane + e] = (in[c * plane + e] - mean) * invstd * gamma + beta;
        }
        break;
    }
}

/* Per-image ops of the backward: op i's weight and bias gradients added (gw, gb), its input
   gradient into grad_in if not NULL; skip: the residual's gradient of this image. */
HOT static void backward_op(const Op *ops, int64_t i, int64_t k, const Layout *l, const float *a,
                            const int32_t *pa, const float *g, float *grad_in, float *skip,
                            float *pad, float *gw, float *gb) {
    const Op *op = &ops[i];
    const float *w = op->weight ? op->weight + k * op->weight_stride : NULL;
    const float *in = a + l->offset[i], *out = a + l->offset[i + 1];
    int64_t n = in_size(op), plane = op->h * op->w;
    switch (op->kind) {
    case 0: conv_backward(op, w, in, g, gw, gb, grad_in, pad); return;
    case 3: linear_backward(op, w, in, g, gw, gb, grad_in); return;
    case 7: memcpy(skip, g, sizeof(float) * n); break; /* to the saved x, at its save op */
    default: break;
    }
    if (!grad_in) return;
    switch (op->kind) {
    case 1: {
        int64_t n_out = out_size(op);
        memset(grad_in, 0, sizeof(float) * n);
        for (int64_t e = 0; e < n_out; e++) grad_in[pa[e]] += g[e];
        break;
    }
    case 2: relu_backward(out, g, grad_in, n); break;
    case 4: {
        int64_t p = op->kh, wp = op->w + 2 * p, hp = op->h + 2 * p;
        for (int64_t c = 0; c < op->cin; c++)
            for (int64_t y = 0; y < op->h; y++)
                memcpy(grad_in + (c * op->h + y) * op->w, g + (c * hp + y + p) * wp + p,
                       sizeof(float) * op->w);
        break;
    }
    case 6: for (int64_t e = 0; e < n; e++) grad_in[e] = skip[e] + g[e]; break;
    case 7: memcpy(grad_in, g, sizeof(float) * n); break;
    case 8: /* amax's backward: the gradient shared evenly by the tied maxima */
        for (int64_t c = 0; c < op->cin; c++) {
            const float *p = in + c * plane;
            int64_t ties = 0;
            for (int64_t e = 0; e < plane; e++) ties += p[e] == out[c];
            float share = g[c] / (float)ties;
            for (int64_t e = 0; e < plane; e++)
                grad_in[c * plane + e] = p[e] == out[c] ? share : 0.0f;
        }
        break;
    case 9: {
        float f = (float)op->factor;
        for (int64_t e = 0; e < n; e++) grad_in[e] = g[e] * f;
        break;
    }
    case 10: { /* the gradient through * gamma, then through * invstd, as autograd's */
        const float *b = op->bias + k * op->bias_stride;
        for (int64_t c = 0, C = op->cin; c < C; c++)
            for (int64_t e = 0; e < plane; e++)
                grad_in[c * plane + e] = g[c * plane + e] * b[c] * w[C + c];
        break;
    }
    }
}

/* K BatchNorm networks, batch b: as bs_convnet_gradients (images [K, b, image], loss_grad and
   log_probs [K, b, classes]; every weight and bias gradient overwritten), plus each BatchNorm's
   batch mean and biased variance into moments [K, moments_stride] (per BatchNorm op in order: C
   means, then C variances), for the running statistics. Returns 0, or -1 if memory ran out. */
int64_t bs_resnet_gradients(const Op *ops, int64_t count, int64_t networks, int64_t batch,
                            const float *images, const float *loss_grad, float *log_probs,
                            int64_t classes, float *moments, int64_t moments_stride) {
    Layout l;
    if (layout_of(ops, count, classes, &l) != 0) return -1;
    int64_t stats_size = 0, first = count;
    for (int64_t i = 0; i < count; i++) {
        if (ops[i].kind == 5) stats_size += 3 * ops[i].cin;
        if (weight_count(&ops[i]) && i < first) first = i;
    }
    float *act = malloc(sizeof(float) * l.total * batch);
    float *grad = malloc(sizeof(float) * l.largest * batch * 3);
    float *stats = malloc(sizeof(float) * (stats_size + 1));
    float *pad = malloc(sizeof(float) * l.padded);
    int32_t *arg = malloc(sizeof(int32_t) * (l.pools + 1) * batch);
    if (!act || !grad || !stats || !pad || !arg) {
        free(l.offset); free(act); free(grad); free(stats); free(pad); free(arg);
        return -1;
    }
    float *next = grad + l.largest * batch, *skip = next + l.largest * batch;
    for (int64_t k = 0; k < networks; k++) {
        zero_gradients(ops, count, k);
        for (int64_t j = 0; j < batch; j++)
            memcpy(act + j * l.total, images + (k * batch + j) * l.image, sizeof(float) * l.image);
        /* forward, op by op */
        int64_t pool_at = 0, stats_at = 0;
        for (int64_t i = 0; i < count; i++) {
            const Op *op = &ops[i];
            if (op->kind == 5) {
                bn_forward(op, op->weight + k * op->weight_stride, op->bias + k * op->bias_stride,
                           act, l.total, l.offset[i], l.offset[i + 1], batch, stats + stats_at);
                stats_at += 3 * op->cin;
                continue;
            }
            for (int64_t j = 0; j < batch; j++)
                forward_op(ops, i, k, &l, act + j * l.total, arg + j * (l.pools + 1) + pool_at);
            if (op->kind == 1) pool_at += out_size(op);
        }
        /* log-softmax and d loss / d logits, as network_gradients */
        for (int64_t j = 0; j < batch; j++) {
            float *lp = log_probs + (k * batch + j) * classes;
            log_softmax(act + j * l.total + l.offset[count], lp, classes);
            log_softmax_backward(loss_grad + (k * batch + j) * classes, lp, grad + j * l.largest,
                                 classes);
        }
        /* backward, op by op, down to the first op with weights */
        float *g = grad, *gi = next;
        for (int64_t i = count - 1; i >= first; i--) {
            const Op *op = &ops[i];
            int need = i > first;
            float *gw = op->grad_weight ? op->grad_weight + k * op->weight_stride : NULL;
            float *gb = op->grad_bias ? op->grad_bias + k * op->bias_stride : NULL;
            if (op->kind == 5) {
                stats_at -= 3 * op->cin;
                bn_backward(op, op->weight + k * op->weight_stride, act, l.total, l.offset[i], g,
                            need ? gi : NULL, l.largest, batch, stats + stats_at, gw, gb);
            } else {
                if (op->kind == 1) pool_at -= out_size(op);
                for (int64_t j = 0; j < batch; j++) /* weight gradients added in image order */
                    backward_op(ops, i, k, &l, act + j * l.total,
                                arg + j * (l.pools + 1) + pool_at, g + j * l.largest,
                                need ? gi + j * l.largest : NULL, skip + j * l.largest, pad, gw,
                                gb);
            }
            float *swap = g;
            g = gi, gi = swap;
        }
        float *m = moments + k * moments_stride;
        for (int64_t i = 0, at = 0; i < count; i++)
            if (ops[i].kind == 5) {
                memcpy(m, stats + at, sizeof(float) * 2 * ops[i].cin);
                m += 2 * ops[i].cin, at += 3 * ops[i].cin;
            }
    }
    free(l.offset); free(act); free(grad); free(stats); free(pad); free(arg);
    return 0;
}

/* Network k's eval-mode forward on one image (every op per image: no train-mode BatchNorm),
   activations into act, the pools' argmax into arg; returns the pools' outputs in all. */
static int64_t forward_one(const Op *ops, int64_t count, int64_t k, const Layout *l,
                           const float *image, float *act, int32_t *arg) {
    memcpy(act, image, sizeof(float) * l->image);
    int64_t pool_at = 0;
    for (int64_t i = 0; i < count; i++) {
        forward_op(ops, i, k, l, act, arg + pool_at);
        if (ops[i].kind == 1) pool_at += out_size(&ops[i]);
    }
    return pool_at;
}

/* The Lipschitz metric of eval-mode BatchNorm networks (their BatchNorms as op 10): as
   bs_convnet_margin_norms, each network at each image alone, op by op. Returns 0, -1 if memory
   ran out, -2 if the network has not two logits, -3 if it holds a train-mode BatchNorm. */
int64_t bs_resnet_margin_norms(const Op *ops, int64_t count, int64_t networks, int64_t n,
                               const float *images, double *norms) {
    if (out_size(&ops[count - 1]) != 2) return -2;
    for (int64_t i = 0; i < count; i++)
        if (ops[i].kind == 5) return -3;
    Layout l;
    if (layout_of(ops, count, 2, &l) != 0) return -1;
    float *act = malloc(sizeof(float) * l.total), *grad = malloc(sizeof(float) * l.largest * 3);
    float *pad = malloc(sizeof(float) * l.padded);
    int32_t *arg = malloc(sizeof(int32_t) * (l.pools + 1));
    if (!act || !grad || !pad || !arg) {
        free(l.offset); free(act); free(grad); free(pad); free(arg);
        return -1;
    }
    float *skip = grad + 2 * l.largest;
    for (int64_t k = 0; k < networks; k++)
        for (int64_t j = 0; j < n; j++) {
            int64_t pool_at = forward_one(ops, count, k, &l, images + j * l.image, act, arg);
            float *g = grad, *gi = grad + l.largest;
            g[0] = -1.0f, g[1] = 1.0f;
            for (int64_t i = count - 1; i >= 0; i--) {
                if (ops[i].kind == 1) pool_at -= out_size(&ops[i]);
                backward_op(ops, i, k, &l, act, arg + pool_at, g, gi, skip, pad, NULL, NULL);
                float *swap = g;
                g = gi, gi = swap;
            }
            double squares = 0.0;
            for (int64_t e = 0; e < l.image; e++) squares += (double)g[e] * g[e];
            norms[k * n + j] = sqrt(squares);
        }
    free(l.offset); free(act); free(grad); free(pad); free(arg);
    return 0;
}

/* Eval-mode logits of BatchNorm networks (their BatchNorms as op 10): network k's on image j into
   logits[(k * n + j) * classes ..], each network at each image alone, op by op (the test
   accuracy). Returns 0, -1 if memory ran out, -3 if the network holds a train-mode BatchNorm. */
int64_t bs_resnet_logits(const Op *ops, int64_t count, int64_t networks, int64_t n,
                         const float *images, float *logits, int64_t classes) {
    for (int64_t i = 0; i < count; i++)
        if (ops[i].kind == 5) return -3;
    Layout l;
    if (layout_of(ops, count, classes, &l) != 0) return -1;
    float *act = malloc(sizeof(float) * l.total);
    int32_t *arg = malloc(sizeof(int32_t) * (l.pools + 1));
    if (!act || !arg) {
        free(l.offset); free(act); free(arg);
        return -1;
    }
    for (int64_t k = 0; k < networks; k++)
        for (int64_t j = 0; j < n; j++) {
            forward_one(ops, count, k, &l, images + j * l.image, act, arg);
            memcpy(logits + (k * n + j) * classes, act + l.offset[count], sizeof(float) * classes);
        }
    free(l.offset); free(act); free(arg);
    return 0;
}
