#pragma once
// The compile targets of the kernel variants, one per ISA level of core/cpu.h. The library is built for
// the x86-64-v2 baseline (the Scalar level); a faster variant carries its level's attribute and runs only
// when active_isa() reaches that level, so the attribute lists exactly the features the level guarantees.
#define FASTVLM_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#define FASTVLM_TARGET_AVX512 \
  __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512bf16")))
// AMX tile loads and bfloat16 / int8 tile products, on top of the Avx512 level (the Amx level of core/cpu.h).
#define FASTVLM_TARGET_AMX                                                                                 \
  __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512bf16,amx-tile," \
                        "amx-bf16,amx-int8")))

// The same targets for a region of code: kernels written once against a lane type are included between
// BEGIN and END inside a namespace of their level, so that every function defined there, templates included,
// carries the level's target. (One string per _Pragma, hence the long lines.)
// clang-format off
#if defined(__clang__)
#define FASTVLM_BEGIN_TARGET_AVX2 _Pragma("clang attribute push(__attribute__((target(\"avx2,fma,f16c\"))), apply_to = function)")
#define FASTVLM_BEGIN_TARGET_AVX512 _Pragma("clang attribute push(__attribute__((target(\"avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512bf16\"))), apply_to = function)")
#define FASTVLM_END_TARGET _Pragma("clang attribute pop")
#else
#define FASTVLM_BEGIN_TARGET_AVX2 _Pragma("GCC push_options") _Pragma("GCC target(\"avx2,fma,f16c\")")
#define FASTVLM_BEGIN_TARGET_AVX512 _Pragma("GCC push_options") _Pragma("GCC target(\"avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512bf16\")")
#define FASTVLM_END_TARGET _Pragma("GCC pop_options")
#endif
// clang-format on
