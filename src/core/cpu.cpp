#include "core/cpu.h"

#include <cpuid.h>

#include <algorithm>
#include <cstdlib>
#include <string>

#include "core/error.h"

#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace fastvlm {
namespace {

struct CpuidRegisters {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
};

CpuidRegisters cpuid(unsigned leaf, unsigned subleaf) {
  CpuidRegisters r;
  if (!__get_cpuid_count(leaf, subleaf, &r.eax, &r.ebx, &r.ecx, &r.edx)) return {};
  return r;
}

// Extended control register 0: which register states the OS saves on context switches. An instruction
// set is only usable when the OS saves its registers too.
unsigned long long read_xcr0() {
  unsigned eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<unsigned long long>(edx) << 32) | eax;
}

// Linux (5.16+) hands out the large AMX tile-data state only on request.
bool request_amx_permission() {
#if defined(__linux__) && defined(SYS_arch_prctl)
  constexpr int kArchReqXcompPerm = 0x1023;
  constexpr int kXfeatureTileData = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureTileData) == 0;
#else
  return false;
#endif
}

CpuFeatures detect() {
  CpuFeatures f;
  const CpuidRegisters leaf1 = cpuid(1, 0);
  const bool osxsave = leaf1.ecx & (1u << 27);
  if (!osxsave) return f;
  const unsigned long long xcr0 = read_xcr0();
  const bool os_saves_ymm = (xcr0 & 0x6) == 0x6;                  // SSE + AVX state
  const bool os_saves_zmm = os_saves_ymm && (xcr0 & 0xe0) == 0xe0;  // opmask + ZMM halves
  const bool os_saves_tiles = (xcr0 & 0x60000) == 0x60000;          // XTILECFG + XTILEDATA

  const CpuidRegisters leaf7 = cpuid(7, 0);
  const CpuidRegisters leaf7_1 = cpuid(7, 1);
  if (os_saves_ymm) {
    f.fma = leaf1.ecx & (1u << 12);
    f.f16c = leaf1.ecx & (1u << 29);
    f.avx2 = leaf7.ebx & (1u << 5);
  }
  if (os_saves_zmm) {
    f.avx512f = leaf7.ebx & (1u << 16);
    f.avx512dq = leaf7.ebx & (1u << 17);
    f.avx512bw = leaf7.ebx & (1u << 30);
    f.avx512vl = leaf7.ebx & (1u << 31);
    f.avx512_vnni = leaf7.ecx & (1u << 11);
    f.avx512_bf16 = leaf7_1.eax & (1u << 5);
  }
  if (os_saves_tiles) {
    f.amx_bf16 = leaf7.edx & (1u << 22);
    f.amx_tile = leaf7.edx & (1u << 24);
    f.amx_int8 = leaf7.edx & (1u << 25);
    if (f.amx_tile) f.amx_permitted = request_amx_permission();
  }
  return f;
}

Isa parse_isa_override(const char* value) {
  const std::string name(value);
  for (Isa isa : {Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Amx})
    if (name == isa_name(isa)) return isa;
  throw Error("FASTVLM_ISA=\"" + name + "\": expected one of scalar, avx2, avx512, amx");
}

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = detect();
  return features;
}

Isa detected_isa() {
  const CpuFeatures& f = cpu_features();
  const bool avx2 = f.avx2 && f.fma && f.f16c;
  const bool avx512 = avx2 && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.avx512_vnni && f.avx512_bf16;
  const bool amx = avx512 && f.amx_tile && f.amx_bf16 && f.amx_int8 && f.amx_permitted;
  return amx ? Isa::Amx : avx512 ? Isa::Avx512 : avx2 ? Isa::Avx2 : Isa::Scalar;
}

Isa active_isa() {
  static const Isa isa = [] {
    const char* forced = std::getenv("FASTVLM_ISA");
    if (!forced || !*forced) return detected_isa();
    return std::min(detected_isa(), parse_isa_override(forced));
  }();
  return isa;
}

std::string_view isa_name(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return "scalar";
    case Isa::Avx2: return "avx2";
    case Isa::Avx512: return "avx512";
    case Isa::Amx: return "amx";
  }
  return "unknown";
}

}  // namespace fastvlm
