// minescan._native_cuda: the GPU render + cut Stage of render_cuda.hpp for Python.  Host arrays are checked
// like the CPU module's; the GIL is released while CUDA works.  CUDA failures raise RuntimeError naming the call.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include <optional>
#include <stdexcept>
#include <string>

#include "render_cuda.hpp"

namespace nb = nanobind;
using namespace nb::literals;
using minescan::cuda::Stage;

namespace {

using Raw = nb::ndarray<nb::ro, nb::ndim<3>, nb::c_contig, nb::device::cpu>;  // [B, rows, width], 8 or 16 bit
using Mask = nb::ndarray<nb::ro, bool, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using Tables = nb::ndarray<nb::ro, std::uint8_t, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using Rects = nb::ndarray<nb::ro, std::int64_t, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using Host = nb::ndarray<std::uint8_t, nb::c_contig, nb::device::cpu>;

void render_rows(Stage& stage, const Raw& data, std::optional<Mask> nodata, std::int64_t row_off) {
    const auto t = data.dtype();
    const int itemsize = t.bits / 8;
    if (!(t == nb::dtype<std::uint8_t>() || t == nb::dtype<std::uint16_t>()))
        throw std::invalid_argument("the GPU renders uint8 or uint16 data (signed data viewed as unsigned)");
    const std::int64_t bands = data.shape(0), rows = data.shape(1), width = data.shape(2);
    if (nodata && (nodata->shape(0) != data.shape(1) || nodata->shape(1) != data.shape(2)))
        throw std::invalid_argument("nodata must be [" + std::to_string(rows) + ", " + std::to_string(width) + "]");
    const auto* mask = nodata ? reinterpret_cast<const std::uint8_t*>(nodata->data()) : nullptr;
    const void* raw = data.data();
    nb::gil_scoped_release release;
    stage.render_rows(raw, itemsize, bands, rows, width, mask, row_off);
}

void cut(Stage& stage, const Rects& rects, std::int64_t size) {
    if (rects.shape(1) != 4) throw std::invalid_argument("rects must be [n, 4]: x0, y0, valid width, valid height");
    const std::int64_t* r = rects.data();
    const std::int64_t n = static_cast<std::int64_t>(rects.shape(0));
    nb::gil_scoped_release release;
    stage.cut(r, n, size);
}

void download(Stage& stage, Host out) {
    std::uint8_t* host = out.data();
    const std::int64_t bytes = static_cast<std::int64_t>(out.size());
    nb::gil_scoped_release release;
    stage.download_batch(host, bytes);
}

}  // namespace

NB_MODULE(_native_cuda, m) {
    m.doc() = "minescan's render + cut as CUDA kernels (native/cuda/render_cuda.hpp).";
    m.def("device_count", &minescan::cuda::device_count, "GPUs the CUDA runtime sees; 0 without a driver or device.");
    nb::class_<Stage>(m, "Stage", "Render raw rows and cut tiles into a device batch, on one stream of one GPU.")
        .def(nb::init<int>(), "device"_a = 0)
        .def("set_tables", [](Stage& s, const Tables& t) { s.set_tables(t.data(), t.shape(0), t.shape(1)); }, "tables"_a)
        .def("render_rows", &render_rows, "data"_a, "nodata"_a.none(), "row_off"_a)
        .def("cut", &cut, "rects"_a, "size"_a)
        .def("download", &download, "out"_a, "Copy the start of the device batch into out (waits for the stream).")
        .def("synchronize", [](Stage& s) { nb::gil_scoped_release r; s.synchronize(); })
        .def_prop_ro("batch_pointer", &Stage::batch_pointer, "Device address of the batch [n, size, size, bands] uint8.")
        .def_prop_ro("stream_handle", &Stage::stream_handle, "The cudaStream_t the stage works on, as an integer.")
        .def_prop_ro("device_name", &Stage::device_name);
}
