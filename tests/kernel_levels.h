#pragma once
// Kernels choose their variant once per process, from active_isa(), so a kernel test checks the lower
// variants by running its own binary again under FASTVLM_ISA=avx2 and =scalar (each level below the one
// this CPU has). A kernel test file calls this from one TEST in the suite KernelLevels, which the child
// runs leave out.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "core/cpu.h"

namespace fastvlm::test_support {

inline void expect_lower_kernel_levels_pass() {
  if (const char* capped = std::getenv("FASTVLM_ISA")) GTEST_SKIP() << "already a child run at " << capped;
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  for (const Isa isa : {Isa::Avx2, Isa::Scalar}) {
    if (isa >= detected_isa()) continue;
    const std::string command = "FASTVLM_ISA=" + std::string(isa_name(isa)) + " '" + self +
                                "' --gtest_filter='-KernelLevels.*' > /dev/null 2>&1";
    EXPECT_EQ(std::system(command.c_str()), 0) << "failed with FASTVLM_ISA=" << isa_name(isa) << ": rerun  " << command;
  }
}

}  // namespace fastvlm::test_support
