#pragma once
// The AMX tile configuration that LDTILECFG reads (palette 1): each tile's rows and bytes per row. Only
// code built with FASTVLM_TARGET_AMX (kernels/target.h) and run at the Amx level, where core/cpu has
// obtained the OS permission for the tile data, loads it.
#include <cstdint>

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

}  // namespace fastvlm::kernels
