#pragma once
// The AMX tile configuration that LDTILECFG reads (palette 1): each tile's rows and bytes per row, and how
// to load it. Only code built with FASTVLM_TARGET_AMX (kernels/target.h) and run at the Amx level, where
// core/cpu has obtained the OS permission for the tile data, loads it.
#include <immintrin.h>

#include <cstdint>

#include "kernels/target.h"

namespace fastvlm::kernels {

struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t bytes_per_row[16] = {};
  uint8_t rows[16] = {};

  void shape(int tile, int tile_rows, int row_bytes) {
    rows[tile] = uint8_t(tile_rows);
    bytes_per_row[tile] = uint16_t(row_bytes);
  }
};

// The configuration is per thread. GCC's _tile_loadconfig tells the compiler it reads 8 bytes of the
// configuration only, so that the stores to the rows and widths could be dropped as dead (leaving tiles
// unconfigured: SIGILL); the empty statement claims all memory behind the pointer may be read.
FASTVLM_TARGET_AMX inline void load_tile_config(const TileConfig& config) {
  __asm__ __volatile__("" : : "r"(&config) : "memory");
  _tile_loadconfig(&config);
}

}  // namespace fastvlm::kernels
