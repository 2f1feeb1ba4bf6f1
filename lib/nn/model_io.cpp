#include "nn/model_io.h"

#include <cmath>
#include <set>

#include <torch/torch.h>

#include "core/error.h"
#include "fed/plan.h"
#include "fed/published.h"
#include "package/roster.h"

namespace fedseg::nn {

NamedTensors named_parameters(ResUNet& m) {
  NamedTensors v;
  for (const auto& p : m->named_parameters(true)) v.emplace_back(p.key(), p.value());
  return v;
}

NamedTensors named_buffers(ResUNet& m) {
  NamedTensors v;
  for (const auto& p : m->named_buffers(true)) v.emplace_back(p.key(), p.value());
  return v;
}

void write_tensors(h5::File& f, const std::string& group, const NamedTensors& t, h5::DType stored, int zstd_level) {
  h5::WriteOptions wo;
  wo.compress = zstd_level != 0;
  wo.zstd_level = zstd_level;
  for (const auto& [name, tensor] : t) {
    torch::Tensor c = tensor.detach().to(torch::kCPU, torch::kFloat32).contiguous();
    h5::Shape shape(c.sizes().begin(), c.sizes().end());
    f.write(group + "/" + name, stored, shape, c.data_ptr<float>(), h5::DType::f32, wo);
  }
}

NamedTensors read_tensors_like(const h5::File& f, const std::string& group, const NamedTensors& like) {
  auto bad = [&](const std::string& why) { return Error(kExitDataErr, "tensors do not fit the model in", f.path(), why); };
  NamedTensors out;
  std::set<std::string> expected;
  for (const auto& [name, t] : like) {
    expected.insert(name);
    const std::string path = group + "/" + name;
    if (!f.exists(path)) throw bad("no tensor '" + path + "'");
    h5::TensorInfo ti = f.info(path);
    h5::Shape want(t.sizes().begin(), t.sizes().end());
    if (ti.shape != want) throw bad("'" + path + "' has shape " + h5::shape_str(ti.shape) + ", the model needs " + h5::shape_str(want));
    if (!ti.dtype || !h5::dtype_is_float(*ti.dtype)) throw bad("'" + path + "' is not a float tensor");
    torch::Tensor c = torch::empty(t.sizes(), torch::kFloat32);
    f.read(path, h5::DType::f32, c.data_ptr<float>(), size_t(c.numel()) * 4);
    if (!torch::isfinite(c).all().item<bool>()) throw bad("'" + path + "' holds NaN or infinite values");
    out.emplace_back(name, c);
  }
  if (f.exists(group))
    for (const auto& ti : f.tensors(group)) {
      std::string name = ti.name.substr(group.size() + 1);
      if (!expected.count(name)) throw bad("'" + ti.name + "' is not a tensor of this model");
    }
  return out;
}

ModelFile load_model(const std::string& path, const std::string& expect_kind) {
  h5::File f = h5::File::open(path, {expect_kind, true});
  ModelFile mf;
  mf.kind = f.kind();
  if (!f.has_attr("/", "architecture")) throw Error(kExitDataErr, "not a model file", path, "no 'architecture' attribute");
  auto j = nlohmann::json::parse(f.attr_string("/", "architecture"), nullptr, false);
  if (j.is_discarded()) throw Error(kExitDataErr, "not a model file", path, "'architecture' is not JSON");
  mf.arch = Architecture::from_json(j, path);
  if (f.has_attr("/", "federation")) mf.federation = f.attr_string("/", "federation");
  if (f.has_attr("/", "round")) mf.round = f.attr_int("/", "round");
  mf.model = ResUNet(mf.arch);
  NamedTensors params = named_parameters(mf.model);
  NamedTensors values = read_tensors_like(f, "params", params);
  torch::NoGradGuard ng;
  for (size_t i = 0; i < params.size(); ++i) params[i].second.copy_(values[i].second);
  return mf;
}

ModelFile load_checked_model(const std::string& path, const std::string& federation, const std::string& aggregator_pub,
                             bool unverified) {
  if (federation.empty()) {
    if (!unverified)
      throw Error(kExitUsage, "the model's signature cannot be checked", path,
                  "give --federation federation.json (or --unverified for a model you made yourself)");
    return load_model(path, "");
  }
  std::optional<crypto::MinisignPublicKey> pinned;
  if (!aggregator_pub.empty()) pinned = package::public_key_of(aggregator_pub);
  fed::Plan plan = fed::Plan::load(federation, pinned);
  package::Fields f = fed::verify_published(plan.roster.aggregator().key, path, {plan.federation(), std::nullopt, "global"});
  ModelFile mf = load_model(path, "global");
  if (mf.federation != f.federation || mf.round != f.round)
    throw Error(kExitDataErr, "model does not match its signature", path,
                "the file says federation '" + mf.federation + "' round " + std::to_string(mf.round));
  return mf;
}

void write_global_model(const std::string& path, ResUNet& m, const std::string& federation, int64_t round,
                        const std::vector<std::string>& parents, const std::string& tool,
                        const std::string& provenance_json, bool overwrite) {
  h5::Output out(path, "global", tool, provenance_json, overwrite);
  h5::File& f = out.file();
  f.set_attr("/", "federation", federation);
  f.set_attr("/", "round", round);
  f.set_attr("/", "architecture", m->architecture().to_json().dump());
  f.set_attr("/", "parents", nlohmann::json(parents).dump());
  f.set_attr("/", "num_parameters", parameter_count(m));
  write_tensors(f, "params", named_parameters(m));
  out.commit();
}

}  // namespace fedseg::nn
