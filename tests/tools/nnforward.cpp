// fedseg-nnforward (tests only, not installed): runs a fedseg model file on an input
// so that tests can compare with the PyTorch definition in share/fedseg/python.
//   fedseg-nnforward MODEL.h5 INPUT.h5 -o OUT.f32
//     INPUT.h5: any HDF5 file with a float32 dataset "x" of shape (N, C, Z, Y, X)
//     OUT.f32:  the logits (N, out_channels, Z, Y, X), float32 little-endian, C order
#include <torch/torch.h>

#include <fstream>

#include "core/atomic_file.h"
#include "core/tool.h"
#include "h5/tensor_file.h"
#include "nn/model_io.h"

namespace fedseg::tools {
namespace {

struct Options {
  std::string model, input, out;
};

int run(const Options& o, const ToolContext& ctx) {
  torch::set_num_threads(ctx.threads());
  nn::ModelFile mf = nn::load_model(o.model, "");
  h5::File in = h5::File::open(o.input, {"", false});
  h5::TensorInfo ti = in.info("x");
  std::vector<int64_t> shape(ti.shape.begin(), ti.shape.end());
  torch::Tensor x = torch::empty(shape, torch::kFloat32);
  in.read("x", h5::DType::f32, x.data_ptr<float>(), size_t(x.numel()) * 4);
  mf.model->eval();
  torch::NoGradGuard ng;
  torch::Tensor y = mf.model->forward(x).contiguous();
  std::string bytes(reinterpret_cast<const char*>(y.data_ptr<float>()), size_t(y.numel()) * 4);
  write_file_atomic(o.out, bytes, true);
  return kExitOk;
}

}  // namespace

const ToolDef& nnforward() {
  static const ToolDef def{
      {"nnforward", "run a model file on an HDF5 input (tests)", "MODEL.h5 INPUT.h5 -o OUT.f32", "", {}, {}, {}, "", {}},
      [](CLI::App& app) -> RunFn {
        auto o = std::make_shared<Options>();
        app.add_option("MODEL", o->model)->required();
        app.add_option("INPUT", o->input)->required();
        app.add_option("-o", o->out)->required();
        return [o](const ToolContext& ctx) { return run(*o, ctx); };
      },
  };
  return def;
}

}  // namespace fedseg::tools
