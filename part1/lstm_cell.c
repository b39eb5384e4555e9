/* The element-wise part of one LSTM step, forward and backward, fused into one pass each.
 *
 * Called from lstm_kernel.py through ctypes, once per time step; the matmuls stay in PyTorch.
 * Each function reads and writes every element once, where separate PyTorch ops (tanh, sigmoid,
 * two multiplies, an add, ...) would each sweep the whole (B, 4H) block and pay their own dispatch.
 * Plain C99 with no dependencies, so any C compiler builds it; the inner loops auto-vectorise.
 * lstm_kernel.py builds it with -ffinite-math-only (min/max clamps become single instructions):
 * NaN inputs are not propagated, which only matters once weights are already NaN.
 *
 * Layout: row-major float32. gates is (B, 4H) with column blocks g, i, f, o as in lstm.py;
 * c_prev, c, tanh_c, h, dh, dc are (B, H).
 */
#include <math.h>
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

/* One batch row of the forward step: adds hw (W_h h_{t-1}) to the pre-activations in `row` and
 * writes g, i, f, o over them. restrict: the arrays do not overlap, so the compiler vectorises
 * without run-time overlap checks. */
static void forward_row(int64_t H, float *restrict row, const float *restrict hw,
                        const float *restrict c_prev, float *restrict c, float *restrict tanh_c,
                        float *restrict h) {
    for (int64_t j = 0; j < H; j++) {
        float g = tanh_approx(row[j] + hw[j]);                 /* (1) */
        float i = sigmoid(row[H + j] + hw[H + j]);             /* (2) */
        float f = sigmoid(row[2 * H + j] + hw[2 * H + j]);     /* (3) */
        float o = sigmoid(row[3 * H + j] + hw[3 * H + j]);     /* (4) */
        float cj = g * i + c_prev[j] * f;                      /* (5) */
        float t = tanh_approx(cj);
        row[j] = g; row[H + j] = i; row[2 * H + j] = f; row[3 * H + j] = o;
        c[j] = cj;
        tanh_c[j] = t;
        h[j] = t * o;                                          /* (6) */
    }
}

/* Equations (1)-(6) for one step. On entry gates holds W_x x_t + b and hw holds W_h h_{t-1}
 * (both (B, 4H)); on exit gates holds g, i, f, o after their nonlinearities (the backward pass
 * needs them). */
void lstm_forward_step(int64_t B, int64_t H, float *gates, const float *hw, const float *c_prev,
                       float *c, float *tanh_c, float *h) {
    for (int64_t b = 0; b < B; b++)
        forward_row(H, gates + b * 4 * H, hw + b * 4 * H, c_prev + b * H, c + b * H, tanh_c + b * H,
                    h + b * H);
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

/* The chain rule back through one step. On entry gates holds g, i, f, o of the step, dh = dL/dh_t
 * and dc = dL/dc_t from the later steps (not yet including the path through h_t). On exit gates
 * holds dL/d(pre-activations) (B, 4H), and dc = dL/dc_{t-1}. dL/dh_{t-1} = grad_a W_h is the
 * caller's matmul. */
void lstm_backward_step(int64_t B, int64_t H, float *gates, const float *c_prev,
                        const float *tanh_c, const float *dh, float *dc) {
    for (int64_t b = 0; b < B; b++)
        backward_row(H, gates + b * 4 * H, c_prev + b * H, tanh_c + b * H, dh + b * H, dc + b * H);
}
