/* The element-wise part of one LSTM step, forward and backward, fused into one pass each.
 *
 * Called from lstm_kernel.py through ctypes, once per time step; the matmuls stay in PyTorch.
 * Each function reads and writes every element once, where separate PyTorch ops (tanh, sigmoid,
 * two multiplies, an add, ...) would each sweep the whole (B, 4H) block and pay their own dispatch.
 * Plain C99 with no dependencies, so any C compiler builds it; the inner loops auto-vectorise.
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
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    float n = floorf(x * 1.44269504f + 0.5f);                              /* round(x / ln2) */
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

/* One batch row of the forward step. restrict: the blocks do not overlap, which lets the
 * compiler vectorise the loop without run-time overlap checks. */
static void forward_row(int64_t H, float *restrict g, float *restrict i, float *restrict f,
                        float *restrict o, const float *restrict c_prev, float *restrict c,
                        float *restrict tanh_c, float *restrict h) {
    for (int64_t j = 0; j < H; j++) {
        float gj = tanh_approx(g[j]), ij = sigmoid(i[j]), fj = sigmoid(f[j]), oj = sigmoid(o[j]);
        float cj = gj * ij + c_prev[j] * fj;          /* (5) */
        float tj = tanh_approx(cj);
        g[j] = gj; i[j] = ij; f[j] = fj; o[j] = oj;
        c[j] = cj;
        tanh_c[j] = tj;
        h[j] = tj * oj;                               /* (6) */
    }
}

/* Equations (1)-(6) for one step. gates holds the pre-activations W_x x_t + W_h h_{t-1} + b on
 * entry and g, i, f, o after their nonlinearities on exit (the backward pass needs them). */
void lstm_forward_step(int64_t B, int64_t H, float *gates, const float *c_prev,
                       float *c, float *tanh_c, float *h) {
    for (int64_t b = 0; b < B; b++) {
        float *row = gates + b * 4 * H;
        forward_row(H, row, row + H, row + 2 * H, row + 3 * H, c_prev + b * H, c + b * H,
                    tanh_c + b * H, h + b * H);
    }
}

/* One batch row of the backward step. */
static void backward_row(int64_t H, const float *restrict g, const float *restrict i,
                         const float *restrict f, const float *restrict o, const float *restrict c_prev,
                         const float *restrict tanh_c, const float *restrict dh, float *restrict dc,
                         float *restrict da_g, float *restrict da_i, float *restrict da_f,
                         float *restrict da_o) {
    for (int64_t j = 0; j < H; j++) {
        float t = tanh_c[j], d_h = dh[j];
        float d_c = dc[j] + d_h * o[j] * (1.0f - t * t);  /* through h = tanh(c) o */
        da_g[j] = d_c * i[j] * (1.0f - g[j] * g[j]);
        da_i[j] = d_c * g[j] * i[j] * (1.0f - i[j]);
        da_f[j] = d_c * c_prev[j] * f[j] * (1.0f - f[j]);
        da_o[j] = d_h * t * o[j] * (1.0f - o[j]);
        dc[j] = d_c * f[j];                                /* through c = ... + c_prev f */
    }
}

/* The chain rule back through one step. On entry dh = dL/dh_t and dc = dL/dc_t from the later
 * steps (not yet including the path through h_t); on exit grad_a = dL/d(pre-activations) (B, 4H)
 * and dc = dL/dc_{t-1}. dL/dh_{t-1} = grad_a W_h is the caller's matmul. */
void lstm_backward_step(int64_t B, int64_t H, const float *gates, const float *c_prev,
                        const float *tanh_c, const float *dh, float *dc, float *grad_a) {
    for (int64_t b = 0; b < B; b++) {
        const float *row = gates + b * 4 * H;
        float *da = grad_a + b * 4 * H;
        backward_row(H, row, row + H, row + 2 * H, row + 3 * H, c_prev + b * H, tanh_c + b * H,
                     dh + b * H, dc + b * H, da, da + H, da + 2 * H, da + 3 * H);
    }
}
