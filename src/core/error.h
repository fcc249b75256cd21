#pragma once
// Inside the library every user-causable failure throws the public fastvlm::Error (include/fastvlm/error.hpp)
// with a message that names the file or key and what was expected; the CLI prints it on one line and
// exits 1.
#include "fastvlm/error.hpp"
