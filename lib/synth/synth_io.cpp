// NIfTI side of synth: reading an anatomy, writing a case's five files.
#include <cstring>

#include "core/error.h"
#include "nifti/nifti.h"
#include "synth/synth.h"

namespace fedseg::synth {

Anatomy load_anatomy(const std::string& path) {
  nifti::Image img = nifti::read(path);  // 66 missing, 65 corrupt
  std::array<int64_t, 3> shape{1, 1, 1};
  if (img.shape.size() < 3)
    throw Error(kExitDataErr, "cannot use anatomy", path, "not a 3-D image");
  for (size_t a = 3; a < img.shape.size(); ++a)
    if (img.shape[a] != 1)
      throw Error(kExitDataErr, "cannot use anatomy", path, "not a 3-D image (it has volumes along dimension " +
                                                                std::to_string(a + 1) + ")");
  for (int a = 0; a < 3; ++a) shape[static_cast<size_t>(a)] = img.shape[static_cast<size_t>(a)];
  std::vector<float> data = img.to_float();
  return make_anatomy(std::move(data), shape, img.affine, path);
}

void write_case(const Case& c, const std::string& case_dir, const std::string& id, Naming n, bool overwrite,
                const std::string& descrip) {
  const auto names = case_files(id, n);
  const std::vector<int64_t> shape(c.shape.begin(), c.shape.end());
  for (int m = 0; m < kModalities + 1; ++m) {
    const bool seg = m == kModalities;
    nifti::Image img = nifti::make_image(shape, seg ? nifti::DataType::u8 : nifti::DataType::i16, c.affine, 1);
    img.header.descrip = descrip;
    if (seg) {
      img.raw.assign(c.labels.begin(), c.labels.end());
    } else {
      const auto& v = c.images[static_cast<size_t>(m)];
      img.raw.resize(v.size() * sizeof(int16_t));
      std::memcpy(img.raw.data(), v.data(), img.raw.size());
    }
    nifti::write(case_dir + "/" + names[static_cast<size_t>(m)], img, overwrite);
  }
}

}  // namespace fedseg::synth
