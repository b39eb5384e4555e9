/* The LSTM recurrence, forward and backward through all time steps, in one call each: per step the
 * product with W_h and the element-wise equations, with the batch rows split over the threads.
 *
 * Called from lstm_kernel.py through ctypes. A batch row's step depends only on that row's own h and
 * c of the step before, so each thread takes a block of batch rows through every step, and the
 * threads meet once per call, not once per step (nor once per operation, as PyTorch ops would).
 * Per step a thread does its rows of the product (a small register-tiled matrix kernel below, fed
 * from the caches: W_h is 256 KB at H = 128) and then the element-wise work on those rows, which
 * reads and writes each element once, where separate PyTorch ops (tanh, sigmoid, two multiplies,
 * an add, ...) would each sweep the whole (B, 4H) block and pay their own dispatch.
 * Plain C99; the inner loops auto-vectorise. Built with -fopenmp where torch runs on a libgomp that
 * the build will share and the compiler has it, so the threads are torch's own OpenMP pool;
 * otherwise (a second runtime would fight torch's threads for the cores) for one thread.
 * Every row is computed by the same code whatever the number of threads (the blocks are whole
 * multiples of the kernel's MR rows), so the thread count does not change the numbers.
 * lstm_kernel.py builds it with -ffinite-math-only (min/max clamps become single instructions):
 * NaN inputs are not propagated, which only matters once weights are already NaN.
 *
 * Layout: row-major float32. gates is (B, 4H) with column blocks g, i, f, o as in lstm.py;
 * c_prev, c, tanh_c, h, h_prev, dh, dc, dh_prev are (B, H); W_hT is (H, 4H) and W_h (4H, H).
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* exp(x) for float32 to about 2 ulp: x = n ln2 + r with |r| <= ln2/2, a degree-6 polynomial for
 * exp(r), and 2^n put straight into the exponent bits. Branch-free, so loops over it vectorise
 * (libm's expf is a function call that most compilers will not vectorise). */
static inline float exp_approx(float x) {
    x = fminf(fmaxf(x, -87.0f), 88.0f);                          /* e^x stays a normal float */
    float n = (x * 1.44269504f + 12582912.0f) - 12582912.0f;     /* round(x / ln2): 1.5 * 2^23 */
    float r = x - n * 0.693145752f - n * 1.42860677e-6f;                        /* ln2 in two parts */
    float p = 1.0f + r * (1.0f + r * (0.5f + r * (0.166666672f + r * (4.16666418e-2f
              + r * (8.33336823e-3f + r * 1.38889905e-3f)))));
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static inline float sigmoid(float x) { return 1.0f / (1.0f + exp_approx(-x)); }

static inline float tanh_approx(float x) { return 1.0f - 2.0f / (1.0f + exp_approx(2.0f * x)); }

/* C (M x N) = A (M x K) B (K x N), or C += A B with accumulate; row-major with leading dimensions.
 * Register tiles of MR rows by NR columns: MR * NR / 16 = 16 AVX-512 registers of sums (where
 * registers are narrower they spill, and the timing in lstm_kernel.py may then keep PyTorch ops).
 * Each k loads one row of B and broadcasts MR numbers of A. Each element's sum runs over k in
 * order, in the tiles and at the edges alike. */
#define MR 8
#define NR 32

static void gemm_tile(int64_t K, const float *restrict A, int64_t lda, const float *restrict B, int64_t ldb,
                      float *restrict C, int64_t ldc, int accumulate) {
    float acc[MR][NR];
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < NR; j++) acc[i][j] = accumulate ? C[i * ldc + j] : 0.0f;
    for (int64_t k = 0; k < K; k++) {
        const float *b = B + k * ldb;
        for (int i = 0; i < MR; i++) {
            float a = A[i * lda + k];
            for (int j = 0; j < NR; j++) acc[i][j] += a * b[j];
        }
    }
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < NR; j++) C[i * ldc + j] = acc[i][j];
}

static void gemm_edge(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb,
                      float *C, int64_t ldc, int accumulate) {
    for (int64_t i = 0; i < M; i++) {
        float *c = C + i * ldc;
        if (!accumulate) memset(c, 0, sizeof(float) * (size_t)N);
        for (int64_t k = 0; k < K; k++) {
            float a = A[i * lda + k];
            for (int64_t j = 0; j < N; j++) c[j] += a * B[k * ldb + j];
        }
    }
}

static void gemm(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb,
                 float *C, int64_t ldc, int accumulate) {
    int64_t M_tiles = M - M % MR, N_tiles = N - N % NR;
    for (int64_t n = 0; n < N_tiles; n += NR)
        for (int64_t m = 0; m < M_tiles; m += MR)
            gemm_tile(K, A + m * lda, lda, B + n, ldb, C + m * ldc + n, ldc, accumulate);
    if (N_tiles < N) gemm_edge(M_tiles, N - N_tiles, K, A, lda, B + N_tiles, ldb, C + N_tiles, ldc, accumulate);
    if (M_tiles < M) gemm_edge(M - M_tiles, N, K, A + M_tiles * lda, lda, B, ldb, C + M_tiles * ldc, ldc, accumulate);
}

/* Threads worth starting for B rows: no more than there are blocks of MR rows. */
static int threads_for(int64_t B, int threads) {
    int64_t tiles = (B + MR - 1) / MR;
    return tiles < threads ? (int)tiles : threads;
}

/* Rows [r0, r1) of thread k's block: whole multiples of MR rows, so that how many threads there are
 * does not decide which rows the tiles compute. */
static void row_block(int64_t B, int threads, int k, int64_t *r0, int64_t *r1) {
    int64_t tiles = (B + MR - 1) / MR, per = (tiles + threads - 1) / threads;
    *r0 = k * per * MR < B ? k * per * MR : B;
    *r1 = (k + 1) * per * MR < B ? (k + 1) * per * MR : B;
}

/* One batch row of the forward step: turns the pre-activations in `row` into g, i, f, o.
 * restrict: the arrays do not overlap, so the compiler vectorises without run-time overlap checks. */
static void forward_row(int64_t H, float *restrict row, const float *restrict c_prev, float *restrict c,
                        float *restrict tanh_c, float *restrict h) {
    for (int64_t j = 0; j < H; j++) {
        float g = tanh_approx(row[j]);                         /* (1) */
        float i = sigmoid(row[H + j]);                         /* (2) */
        float f = sigmoid(row[2 * H + j]);                     /* (3) */
        float o = sigmoid(row[3 * H + j]);                     /* (4) */
        float cj = g * i + c_prev[j] * f;                      /* (5) */
        float t = tanh_approx(cj);
        row[j] = g; row[H + j] = i; row[2 * H + j] = f; row[3 * H + j] = o;
        c[j] = cj;
        tanh_c[j] = t;
        h[j] = t * o;                                          /* (6) */
    }
}

/* One batch row of the backward step: reads g, i, f, o from `row` and writes the four
 * pre-activation gradients over them (each element is read before it is written). */
static void backward_row(int64_t H, float *restrict row, const float *restrict c_prev,
                         const float *restrict tanh_c, const float *restrict dh, float *restrict dc) {
    for (int64_t j = 0; j < H; j++) {
        float g = row[j], i = row[H + j], f = row[2 * H + j], o = row[3 * H + j];
        float t = tanh_c[j], d_h = dh[j];
        float d_c = dc[j] + d_h * o * (1.0f - t * t);      /* through h = tanh(c) o */
        row[j] = d_c * i * (1.0f - g * g);                 /* d a_g */
        row[H + j] = d_c * g * i * (1.0f - i);             /* d a_i */
        row[2 * H + j] = d_c * c_prev[j] * f * (1.0f - f); /* d a_f */
        row[3 * H + j] = d_h * t * o * (1.0f - o);         /* d a_o */
        dc[j] = d_c * f;                                   /* through c = ... + c_prev f */
    }
}

/* Equations (1)-(6) for every step. gates (T, B, 4H) holds W_x x_t + b on entry; per step the product
 * W_h h_{t-1} is added (h_0 = 0 adds nothing), and gates leaves holding g, i, f, o after their
 * nonlinearities (the backward pass needs them). c and h (T + 1, B, H) with c[0] = h[0] = 0, and
 * tanh_c (T, B, H), are filled in. */
void lstm_forward(int64_t T, int64_t B, int64_t H, int threads, float *gates, const float *W_hT, float *c,
                  float *tanh_c, float *h) {
    threads = threads_for(B, threads);
    #pragma omp parallel for num_threads(threads) schedule(static, 1)
    for (int k = 0; k < threads; k++) {
        int64_t r0, r1;
        row_block(B, threads, k, &r0, &r1);
        for (int64_t t = 0; t < T; t++) {
            float *g = gates + t * B * 4 * H;
            const float *c_prev = c + t * B * H, *h_prev = h + t * B * H;
            if (t > 0)
                gemm(r1 - r0, 4 * H, H, h_prev + r0 * H, H, W_hT, 4 * H, g + r0 * 4 * H, 4 * H, 1);
            for (int64_t b = r0; b < r1; b++)
                forward_row(H, g + b * 4 * H, c_prev + b * H, c + (t + 1) * B * H + b * H,
                            tanh_c + t * B * H + b * H, h + (t + 1) * B * H + b * H);
        }
    }
}

/* The chain rule back through every step. On entry gates holds each step's g, i, f, o, dh = dL/dh_T
 * and dc = 0; on exit gates holds dL/d(pre-activations) (T, B, 4H). Per step, from the last: dc gains
 * the path through h_t, the four gradients are written over the gates, dc becomes dL/dc_{t-1} and
 * dh becomes dL/dh_{t-1} = grad_a W_h (the first step's is not needed: h_0 is no parameter), written
 * into spare, which then swaps with dh. dh and spare are (B, H) and both are overwritten. */
void lstm_backward(int64_t T, int64_t B, int64_t H, int threads, float *gates, const float *c, const float *tanh_c,
                   float *dh, float *spare, float *dc, const float *W_h) {
    threads = threads_for(B, threads);
    #pragma omp parallel for num_threads(threads) schedule(static, 1)
    for (int k = 0; k < threads; k++) {
        int64_t r0, r1;
        row_block(B, threads, k, &r0, &r1);
        float *d_h = dh, *d_prev = spare;
        for (int64_t t = T - 1; t >= 0; t--) {
            float *g = gates + t * B * 4 * H;
            for (int64_t b = r0; b < r1; b++)
                backward_row(H, g + b * 4 * H, c + t * B * H + b * H, tanh_c + t * B * H + b * H, d_h + b * H,
                             dc + b * H);
            if (t > 0) {
                gemm(r1 - r0, H, 4 * H, g + r0 * 4 * H, 4 * H, W_h, H, d_prev + r0 * H, H, 0);
                float *swap = d_h;
                d_h = d_prev;
                d_prev = swap;
            }
        }
    }
}
