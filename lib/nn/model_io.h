// fedseg::nn model files (DESIGN.md §3, docs/formats.md): /params/<name> float32
// tensors named like the model's state_dict keys, root attribute `architecture`
// (JSON, nn::Architecture), plus `federation`, `round` and `parents` for kind
// global. The same reader serves checkpoints (kind checkpoint).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "h5/tensor_file.h"
#include "nn/model.h"

namespace fedseg::nn {

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

// The model's parameters and buffers in state_dict order (CPU float32 views).
NamedTensors named_parameters(ResUNet& m);
NamedTensors named_buffers(ResUNet& m);

// Writes each tensor (moved to CPU float32) as group/<name>, stored as `stored`
// (f32, or f16/bf16-free f16 for compact updates), shuffle + zstd at `zstd_level`
// (0: no filters, the fastest for checkpoints).
void write_tensors(h5::File& f, const std::string& group, const NamedTensors& t, h5::DType stored = h5::DType::f32,
                   int zstd_level = 1);

// Reads group/<name> for every name of `like` into a CPU float32 tensor of the
// same shape. Error 65 naming the file when a tensor is missing, has another
// shape, holds a non-finite value, or the group holds tensors `like` lacks.
NamedTensors read_tensors_like(const h5::File& f, const std::string& group, const NamedTensors& like);

struct ModelFile {
  ResUNet model{nullptr};
  Architecture arch;
  std::string federation;
  int64_t round = -1;
  std::string kind;
};

// Opens a model file (kind global by default), rebuilds the model from its
// architecture and loads its parameters. Error 66 missing, 65 malformed.
ModelFile load_model(const std::string& path, const std::string& expect_kind = "global");

// A model a site received: with `federation` (federation.json, its signature checked,
// pinned to `aggregator_pub` when given), MODEL.minisig must verify with the plan's
// aggregator key, name the plan's federation and kind global, and hash to the file,
// before HDF5 opens it. Without `federation`, `unverified` must be set (a model the
// user made or checked otherwise): Error 64 otherwise.
ModelFile load_checked_model(const std::string& path, const std::string& federation, const std::string& aggregator_pub,
                             bool unverified);

// Writes a global model file atomically (Error 73 when it exists and !overwrite).
void write_global_model(const std::string& path, ResUNet& m, const std::string& federation, int64_t round,
                        const std::vector<std::string>& parents, const std::string& tool,
                        const std::string& provenance_json, bool overwrite);

}  // namespace fedseg::nn
