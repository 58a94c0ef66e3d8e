// The paper's network: 650 -> 16 -> 3, sigmoid on both layers, squared error, online SGD with
// momentum, with the exact float/double semantics of the original C++ (vectors/README.md,
// "Exact semantics of one step"; Python reference: tinyfed/model/__init__.py).
//
// Parameters are one flat float[kParams] in the board's (and the link's) layout:
//   hidden layer, (650 + 1) * 16 floats: weight input j -> hidden i at j * 16 + i,
//     bias of hidden i at 650 * 16 + i;
//   output layer at offset kHiddenParams, (16 + 1) * 3 floats: weight hidden j -> output i at
//     j * 3 + i, bias of output i at 16 * 3 + i.
// The momentum buffer ("velocity", the previous delta_w) has the same shape and layout.
#pragma once

#include <stdint.h>

#include "status.h"

namespace tinyfed {

constexpr int kInputs = 650;  // 13 MFCC coefficients x 50 frames (the paper's network, 650-16-3)
constexpr int kHidden = 16;   // the paper's hidden layer
constexpr int kOutputs = 3;   // three keywords (or two keywords and silence), the paper
constexpr int kHiddenParams = (kInputs + 1) * kHidden;   // 10,416 (vectors/README.md)
constexpr int kOutputParams = (kHidden + 1) * kOutputs;  // 51 (vectors/README.md)
constexpr int kParams = kHiddenParams + kOutputParams;   // 10,467 floats = 41,868 bytes
constexpr uint32_t kDefaultSeed = 12345;  // the paper: np.random.seed(12345)
constexpr float kDefaultLearningRate = 0.3f;  // the paper's default (one experiment used 0.1)
constexpr float kDefaultMomentum = 0.9f;      // the paper
constexpr double kErrorScale = 0.33333;  // the original's per-output error constant, a double
constexpr float kDetectionThreshold = 0.6f;  // the paper: an output must exceed this to light

// The paper's initial model: numpy's legacy RandomState(seed).uniform(-0.5, 0.5), float32,
// 10,416 hidden values then 51 output values from one stream; bit-exact with numpy
// (MT19937 init_genrand, 53-bit doubles from two draws). Uses 2,496 bytes of stack for the
// MT19937 state. Errors: kBadArgument (null).
Status nn_init_params(float* params, uint32_t seed);

// Forward pass: outputs[3] for input x[650]. Errors: kBadArgument (null), kNonFinite (a
// non-finite input; outputs untouched).
Status nn_forward(const float* params, const float* x, float* outputs);

// One online training step on (x, label): forward, loss, backward with the old output weights,
// then delta = lr * grad_term + momentum * delta_prev; param += delta, hidden layer first.
// loss_out and outputs_out (each may be null) receive the loss and the 3 outputs *before* the
// update. Errors, with nothing changed: kBadArgument (null params/velocity/x, label > 2,
// non-finite lr or momentum), kNonFinite (a non-finite input).
Status nn_train_step(float* params, float* velocity, const float* x, uint8_t label, float lr,
                     float momentum, float* loss_out, float* outputs_out);

// Index of the highest output, or -1 if none exceeds kDetectionThreshold (the paper's LED rule).
int nn_detect(const float* outputs);

}  // namespace tinyfed
