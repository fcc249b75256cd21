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
