// Bare-metal instruction-count benchmark of the portable core on QEMU mps2-an386
// (Cortex-M4F). See bench/Makefile and docs/numerics.md. Not part of the firmware build.
//
// Timing: SysTick on the 25 MHz processor clock; QEMU runs with -icount shift=0 (one
// instruction = 1 ns of virtual time), so instructions = ticks * kInsnPerTick. A calibration
// loop of known length checks that ratio at run time.
#include <stdint.h>
#include <string.h>

#include "dscnn.h"
#include "dscnn_weights.h"
#include "head.h"
#include "logmel.h"
#include "mfcc.h"
#include "nn.h"

extern "C" {
extern uint32_t _data_load, _data_start, _data_end, _bss_start, _bss_end, _stack_top;
void Reset_Handler();
__attribute__((noreturn)) void Default_Handler() {
  for (;;) {
  }
}
int main();
// newlib's syscalls are never reached by the code measured; these satisfy the linker.
void _exit(int) { Default_Handler(); }
}

__attribute__((section(".vectors"), used)) static void* const kVectors[16] = {
    &_stack_top, reinterpret_cast<void*>(Reset_Handler),
    reinterpret_cast<void*>(Default_Handler), reinterpret_cast<void*>(Default_Handler),
    reinterpret_cast<void*>(Default_Handler), reinterpret_cast<void*>(Default_Handler),
    reinterpret_cast<void*>(Default_Handler), nullptr, nullptr, nullptr, nullptr,
    reinterpret_cast<void*>(Default_Handler), reinterpret_cast<void*>(Default_Handler),
    nullptr, reinterpret_cast<void*>(Default_Handler), reinterpret_cast<void*>(Default_Handler)};

void Reset_Handler() {
  volatile uint32_t* cpacr = reinterpret_cast<volatile uint32_t*>(0xE000ED88u);
  *cpacr |= (0xFu << 20);  // CP10/CP11 full access: enable the FPU before any float code
  __asm volatile("dsb\n isb");
  uint32_t* src = &_data_load;
  for (uint32_t* dst = &_data_start; dst < &_data_end;) *dst++ = *src++;
  for (uint32_t* dst = &_bss_start; dst < &_bss_end;) *dst++ = 0u;
  main();
  for (;;) {
  }
}

namespace {

// ---- semihosting (QEMU -semihosting) ----
int semihost(int op, const void* arg) {
  register int r0 __asm("r0") = op;
  register const void* r1 __asm("r1") = arg;
  __asm volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
  return r0;
}
void puts_(const char* s) { semihost(0x04, s); }  // SYS_WRITE0
void put_u(uint32_t v) {
  char buf[12];
  int i = 11;
  buf[i] = '\0';
  do {
    buf[--i] = static_cast<char>('0' + v % 10u);
    v /= 10u;
  } while (v != 0u);
  puts_(buf + i);
}
void exit_() {
  static const uint32_t block[2] = {0x20026u, 0u};  // ADP_Stopped_ApplicationExit
  semihost(0x18, reinterpret_cast<const void*>(block[0]));  // SYS_EXIT: AArch32 passes the reason itself
}

// ---- SysTick ----
volatile uint32_t& kCsr = *reinterpret_cast<volatile uint32_t*>(0xE000E010u);
volatile uint32_t& kRvr = *reinterpret_cast<volatile uint32_t*>(0xE000E014u);
volatile uint32_t& kCvr = *reinterpret_cast<volatile uint32_t*>(0xE000E018u);
void tick_start() {
  kCsr = 0u;
  kRvr = 0x00FFFFFFu;
  kCvr = 0u;
  kCsr = 5u;  // enable, processor clock, no interrupt
}
uint32_t tick_read() { return kCvr; }
uint32_t ticks_since(uint32_t t0) { return (t0 - tick_read()) & 0x00FFFFFFu; }

__attribute__((noinline)) void spin(uint32_t n) {  // exactly 2 instructions per iteration
  __asm volatile(
      "1: subs %0, %0, #1\n"
      "   bne 1b\n"
      : "+r"(n)
      :
      : "cc");
}

uint32_t fnv1a(const void* data, uint32_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  uint32_t h = 2166136261u;
  for (uint32_t i = 0; i < n; ++i) h = (h ^ p[i]) * 16777619u;
  return h;
}

int16_t g_audio[tinyfed::kAudioSamples];
float g_features[tinyfed::kFeatures];
tinyfed::MfccWorkspace g_ws;
float g_params[tinyfed::kParams];
float g_velocity[tinyfed::kParams];

void report(const char* what, uint32_t ticks, uint32_t insn_per_tick) {
  puts_(what);
  puts_(": ");
  put_u(ticks * insn_per_tick);
  puts_(" instructions\n");
}

// ---- the dscnn family: the shared vectors' model (vectors/dscnn/fw/dscnn_weights.cpp: a random
// float model quantised like the released one, so its shifts are realistic) and a random input.
constexpr int kC = tinyfed::kDscnnChannels;
int8_t g_input[tinyfed::kDscnnInput];
tinyfed::Head g_head;
tinyfed::DscnnWork g_work;      // the extractor's activations (caller-owned)
tinyfed::LogmelWork g_logmel;  // logmel40's float map (caller-owned)

void make_dscnn(tinyfed::DscnnWeights& wts) {
  namespace dw = tinyfed::dscnn_weights;
  wts = tinyfed::dscnn_weights_from(dw::kLayer, dw::kEmbedA, dw::kEmbedB);
  uint32_t x = 7u;
  for (int i = 0; i < tinyfed::kDscnnInput; ++i) {
    x = tinyfed::xorshift32(x);
    g_input[i] = static_cast<int8_t>(x >> 24);
  }
}

void bench_dscnn(uint32_t insn_per_tick) {
  static tinyfed::DscnnWeights wts;
  make_dscnn(wts);
  // logmel40 on the noise second of main() (aligned in place: the copy keeps g_audio).
  static int16_t audio[tinyfed::kAudioSamples];
  memcpy(audio, g_audio, sizeof audio);
  uint32_t t0 = tick_read();
  tinyfed::logmel40_compute(audio, g_input, g_logmel);
  report("logmel40_compute (1 s of audio)", ticks_since(t0), insn_per_tick);
  puts_("fnv1a(logmel40 input) = ");
  put_u(fnv1a(g_input, sizeof g_input));
  puts_("\n");
  int8_t emb[kC];
  t0 = tick_read();
  tinyfed::dscnn_extract(g_input, wts, emb, g_work);
  report("dscnn_extract (one utterance)", ticks_since(t0), insn_per_tick);
  static int8_t a[tinyfed::kDscnnConv0Out], b[tinyfed::kDscnnBufB];
  t0 = tick_read();
  tinyfed::dscnn_conv0(g_input, wts.conv0, a);
  report("  conv0", ticks_since(t0), insn_per_tick);
  t0 = tick_read();
  tinyfed::dscnn_depthwise(a, tinyfed::kDscnnH0, tinyfed::kDscnnW0, 2, wts.dw[0], b);
  report("  ds1.dw (stride 2)", ticks_since(t0), insn_per_tick);
  t0 = tick_read();
  tinyfed::dscnn_pointwise(b, tinyfed::kDscnnPositions, wts.pw[0], a);
  report("  ds1.pw (one pointwise)", ticks_since(t0), insn_per_tick);
  t0 = tick_read();
  tinyfed::dscnn_depthwise(a, tinyfed::kDscnnH1, tinyfed::kDscnnW1, 1, wts.dw[1], b);
  report("  ds2.dw (one stride-1 depthwise)", ticks_since(t0), insn_per_tick);
  // The DSP pointwise (SMLAD) against the portable loop that the host tests check.
  static int8_t dsp[tinyfed::kDscnnBufB], portable[tinyfed::kDscnnBufB];
  tinyfed::dscnn_pointwise(b, tinyfed::kDscnnPositions, wts.pw[1], dsp);
  t0 = tick_read();
  tinyfed::dscnn_pointwise_portable(b, tinyfed::kDscnnPositions, wts.pw[1], portable);
  report("  (portable pointwise, for comparison)", ticks_since(t0), insn_per_tick);
  puts_(memcmp(dsp, portable, sizeof dsp) == 0 ? "pointwise DSP == portable: yes\n"
                                                  : "pointwise DSP == portable: NO\n");
  puts_("fnv1a(embedding) = ");
  put_u(fnv1a(emb, sizeof emb));
  puts_("\n");

  tinyfed::head_init(g_head, 3);
  float e[kC];
  tinyfed::dscnn_embedding_float(emb, wts, e);
  float loss = 0.0f;
  t0 = tick_read();
  tinyfed::head_step(g_head.params, 3, e, 1, 0.1f, &loss);
  report("head_step (K = 3)", ticks_since(t0), insn_per_tick);
  // record() with the store full: 5 extractions, then a pass over 320 embeddings.
  for (int i = 0; g_head.count < tinyfed::kHeadStoreSize; ++i) {
    emb[i % kC] = static_cast<int8_t>(emb[i % kC] + 1);
    tinyfed::head_store_add(g_head, emb, static_cast<uint8_t>(i % 3));
  }
  t0 = tick_read();
  tinyfed::head_record(g_head, g_input, 2, wts, 0.1f, &loss, g_work);
  report("head_record (5 extractions + a pass over 320)", ticks_since(t0), insn_per_tick);
  t0 = tick_read();
  tinyfed::head_replay_pass(g_head, wts, 0.1f, &loss);
  report("  of which the replay pass (320 head steps)", ticks_since(t0), insn_per_tick);
  int word = 0;
  t0 = tick_read();
  tinyfed::head_decide(g_head, g_input, wts, tinyfed::kHeadThreshold, &word, nullptr, g_work);
  report("head_decide (extraction + head)", ticks_since(t0), insn_per_tick);
  puts_("fnv1a(head after record) = ");
  put_u(fnv1a(g_head.params, sizeof g_head.params));
  puts_("\n");
}

}  // namespace

int main() {
  tick_start();
  // Calibration: 2,000,000 instructions of known length.
  uint32_t t0 = tick_read();
  spin(1000000u);
  const uint32_t cal = ticks_since(t0);
  const uint32_t insn_per_tick = (2000000u + cal / 2u) / cal;
  puts_("calibration: 2000000 instructions = ");
  put_u(cal);
  puts_(" ticks -> ");
  put_u(insn_per_tick);
  puts_(" instructions per tick\n");

  // A deterministic noise signal (white noise like vectors/mfcc/white_noise).
  uint32_t s = 12345u;
  for (int n = 0; n < tinyfed::kAudioSamples; ++n) {
    s = s * 1664525u + 1013904223u;
    g_audio[n] = static_cast<int16_t>(s >> 16);
  }
  tinyfed::mfcc_init(g_ws);
  t0 = tick_read();
  tinyfed::mfcc_compute(g_audio, g_features, g_ws);
  report("mfcc_compute (1 s of audio)", ticks_since(t0), insn_per_tick);

  float frame[tinyfed::kFftLength];
  tinyfed::mfcc_preemphasis(g_audio, 0, tinyfed::kFftLength, frame);
  t0 = tick_read();
  tinyfed::rfft256(frame);
  report("rfft256 (one frame)", ticks_since(t0), insn_per_tick);

  t0 = tick_read();
  tinyfed::nn_init_params(g_params, tinyfed::kDefaultSeed);
  report("nn_init_params", ticks_since(t0), insn_per_tick);
  memset(g_velocity, 0, sizeof g_velocity);

  float out[tinyfed::kOutputs];
  t0 = tick_read();
  tinyfed::nn_forward(g_params, g_features, out);
  report("nn_forward", ticks_since(t0), insn_per_tick);

  float loss = 0.0f;
  t0 = tick_read();
  tinyfed::nn_train_step(g_params, g_velocity, g_features, 1, tinyfed::kDefaultLearningRate,
                         tinyfed::kDefaultMomentum, &loss, out);
  report("nn_train_step", ticks_since(t0), insn_per_tick);

  // Bit-level fingerprints, to compare with the host build (docs/numerics.md).
  {
    static float pre[tinyfed::kAudioSamples], pw[tinyfed::kFrames * tinyfed::kFftBins],
        en[tinyfed::kFrames], mel[tinyfed::kFrames * tinyfed::kMelFilters],
        lm[tinyfed::kFrames * tinyfed::kMelFilters], raw[tinyfed::kFeatures];
    tinyfed::MfccTrace tr{pre, pw, en, mel, lm, raw};
    tinyfed::mfcc_compute(g_audio, g_features, g_ws, &tr);
    const void* bufs[6] = {pre, pw, en, mel, lm, raw};
    const uint32_t sizes[6] = {sizeof pre, sizeof pw, sizeof en, sizeof mel, sizeof lm, sizeof raw};
    for (int i = 0; i < 6; ++i) {
      puts_("fnv1a(stage ");
      put_u(static_cast<uint32_t>(i));
      puts_(") = ");
      put_u(fnv1a(bufs[i], sizes[i]));
      puts_("\n");
    }
  }
  puts_("fnv1a(features) = ");
  put_u(fnv1a(g_features, sizeof g_features));
  puts_("\nfnv1a(params after 1 step) = ");
  put_u(fnv1a(g_params, sizeof g_params));
  puts_("\n");
  bench_dscnn(insn_per_tick);
  puts_("sizeof(MfccWorkspace) = ");
  put_u(sizeof(tinyfed::MfccWorkspace));
  puts_("\n");
  exit_();
  return 0;
}
