// minescan._native: the CPU hot path of render.hpp for Python.  Every call checks its arrays' shapes and
// types (ValueError / TypeError naming the argument), takes raw pointers while it holds the GIL, and releases
// the GIL for the work, so the reader threads render and cut in parallel.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "render.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

using Input = nb::ndarray<nb::ro, nb::ndim<3>, nb::c_contig, nb::device::cpu>;        // bands-first [B, h, w]
using Mask = nb::ndarray<nb::ro, bool, nb::ndim<2>, nb::c_contig, nb::device::cpu>;    // nodata [h, w]
using Out = nb::ndarray<std::uint8_t, nb::ndim<3>, nb::c_contig, nb::device::cpu>;    // [h, w, B]
using Doubles = nb::ndarray<nb::ro, double, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
using Bytes3 = nb::ndarray<std::uint8_t, nb::ndim<3>, nb::device::cpu>;              // [planes, rows, row bytes]
using Bytes3In = nb::ndarray<nb::ro, std::uint8_t, nb::ndim<3>, nb::device::cpu>;

[[noreturn]] void fail(const std::string& message) { throw std::invalid_argument(message); }

std::string shape_of(std::int64_t a, std::int64_t b, std::int64_t c) {
    return "[" + std::to_string(a) + ", " + std::to_string(b) + ", " + std::to_string(c) + "]";
}

// The shared checks of every render: out is [h, w, B] for data [B, h, w], nodata (if any) [h, w].
minescan::Planes planes_of(const Input& data, const std::optional<Mask>& nodata, const Out& out) {
    const std::int64_t bands = data.shape(0), h = data.shape(1), w = data.shape(2);
    if (out.shape(0) != static_cast<std::size_t>(h) || out.shape(1) != static_cast<std::size_t>(w) ||
        out.shape(2) != static_cast<std::size_t>(bands))
        fail("out must be " + shape_of(h, w, bands) + " for data " + shape_of(bands, h, w) + ", got " +
             shape_of(out.shape(0), out.shape(1), out.shape(2)));
    if (nodata && (nodata->shape(0) != static_cast<std::size_t>(h) || nodata->shape(1) != static_cast<std::size_t>(w)))
        fail("nodata must be [" + std::to_string(h) + ", " + std::to_string(w) + "], got [" +
             std::to_string(nodata->shape(0)) + ", " + std::to_string(nodata->shape(1)) + "]");
    return minescan::Planes{data.data(), bands, h * w};
}

const std::uint8_t* mask_ptr(const std::optional<Mask>& nodata) {
    return nodata ? reinterpret_cast<const std::uint8_t*>(nodata->data()) : nullptr;
}

char kind_of(const nb::dlpack::dtype& t) {
    switch (static_cast<nb::dlpack::dtype_code>(t.code)) {
        case nb::dlpack::dtype_code::Int: return 'i';
        case nb::dlpack::dtype_code::UInt: return 'u';
        case nb::dlpack::dtype_code::Float: return 'f';
        default: return '?';
    }
}

// (numpy kind, itemsize) of data the formula and curve kernels take: 32 or 64 bit integers or floats.
std::pair<char, int> wide_type(const Input& data, const char* call) {
    const auto t = data.dtype();
    const char kind = kind_of(t);
    const int itemsize = t.bits / 8;
    if (kind == '?' || (itemsize != 4 && itemsize != 8) || t.lanes != 1)
        fail(std::string(call) + " takes 32 or 64 bit integers or floats");
    return {kind, itemsize};
}

std::int64_t render_table(const Input& data, nb::ndarray<nb::ro, std::uint8_t, nb::ndim<2>, nb::c_contig, nb::device::cpu> tables,
                          std::optional<Mask> nodata, Out out) {
    const minescan::Planes in = planes_of(data, nodata, out);
    const auto t = data.dtype();
    const bool wide = t == nb::dtype<std::uint16_t>();
    if (!wide && t != nb::dtype<std::uint8_t>()) fail("render_table takes uint8 or uint16 data (signed data viewed as unsigned)");
    const std::size_t len = wide ? 65536 : 256;
    if (tables.shape(0) != static_cast<std::size_t>(in.bands) || tables.shape(1) != len)
        fail("tables must be [" + std::to_string(in.bands) + ", " + std::to_string(len) + "], got [" +
             std::to_string(tables.shape(0)) + ", " + std::to_string(tables.shape(1)) + "]");
    const std::uint8_t* mask = mask_ptr(nodata);
    std::uint8_t* dst = out.data();
    nb::gil_scoped_release release;
    return wide ? minescan::render_table16(in, tables.data(), mask, dst) : minescan::render_table8(in, tables.data(), mask, dst);
}

std::int64_t render_linear(const Input& data, Doubles low, Doubles factor, std::optional<Mask> nodata, Out out) {
    const minescan::Planes in = planes_of(data, nodata, out);
    if (low.shape(0) != static_cast<std::size_t>(in.bands) || factor.shape(0) != static_cast<std::size_t>(in.bands))
        fail("low and factor need one value per band (" + std::to_string(in.bands) + ")");
    const auto [kind, itemsize] = wide_type(data, "render_linear");
    const std::uint8_t* mask = mask_ptr(nodata);
    std::uint8_t* dst = out.data();
    nb::gil_scoped_release release;
    return minescan::render_linear(in, kind, itemsize, low.data(), factor.data(), mask, dst);
}

std::int64_t render_curves(const Input& data, Doubles xs, Doubles ys,
                           nb::ndarray<nb::ro, std::int64_t, nb::ndim<1>, nb::c_contig, nb::device::cpu> offsets,
                           std::optional<Mask> nodata, Out out) {
    const minescan::Planes in = planes_of(data, nodata, out);
    if (offsets.shape(0) != static_cast<std::size_t>(in.bands + 1)) fail("offsets needs bands + 1 entries");
    const std::int64_t* off = offsets.data();
    if (xs.shape(0) != ys.shape(0) || off[0] != 0 || off[in.bands] != static_cast<std::int64_t>(xs.shape(0)))
        fail("xs and ys must hold every band's knots, split at offsets");
    for (std::int64_t b = 0; b < in.bands; ++b)
        if (off[b + 1] - off[b] < 1) fail("each band needs at least one knot");
    const auto [kind, itemsize] = wide_type(data, "render_curves");
    const std::uint8_t* mask = mask_ptr(nodata);
    std::uint8_t* dst = out.data();
    nb::gil_scoped_release release;
    return minescan::render_curves(in, kind, itemsize, xs.data(), ys.data(), off, mask, dst);
}

void cut(Bytes3 dst, const std::vector<std::tuple<Bytes3In, std::int64_t, std::int64_t>>& pieces, std::int64_t elem,
         std::int64_t x0, std::int64_t y0, std::int64_t width, std::int64_t height, std::uint8_t fill) {
    if (dst.stride(2) != 1) fail("dst rows must be contiguous");
    if (elem < 1 || width < 0 || height < 0 || width * elem > static_cast<std::int64_t>(dst.shape(2)) ||
        height > static_cast<std::int64_t>(dst.shape(1)))
        fail("the rectangle " + std::to_string(width) + " x " + std::to_string(height) + " px does not fit dst");
    const minescan::Bytes2D out{dst.data(), static_cast<std::int64_t>(dst.shape(0)), static_cast<std::int64_t>(dst.shape(1)),
                                static_cast<std::int64_t>(dst.shape(2)), dst.stride(0), dst.stride(1)};
    std::vector<minescan::Piece> sources;
    sources.reserve(pieces.size());
    for (const auto& [array, row_off, col_off] : pieces) {
        if (array.stride(2) != 1) fail("piece rows must be contiguous");
        if (array.shape(0) != dst.shape(0)) fail("a piece has " + std::to_string(array.shape(0)) + " planes, dst " + std::to_string(dst.shape(0)));
        if (array.shape(2) % static_cast<std::size_t>(elem) != 0) fail("a piece's row bytes are not whole columns");
        sources.push_back(minescan::Piece{array.data(), static_cast<std::int64_t>(array.shape(1)),
                                          static_cast<std::int64_t>(array.shape(2)) / elem, array.stride(0), array.stride(1),
                                          row_off, col_off});
    }
    nb::gil_scoped_release release;
    minescan::cut(out, sources.data(), sources.size(), elem, x0, y0, width, height, fill);
}

}  // namespace

NB_MODULE(_native, m) {
    m.doc() = "minescan's CPU hot path: render decoded bands to uint8 and cut tiles (see native/render.hpp).";
    m.def("render_table", &render_table, "data"_a, "tables"_a, "nodata"_a.none(), "out"_a,
          "8/16 bit data [B, h, w] through a table per band [B, 256 | 65536] into out [h, w, B]; nodata -> 0. "
          "Returns the nodata pixel count.");
    m.def("render_linear", &render_linear, "data"_a, "low"_a, "factor"_a, "nodata"_a.none(), "out"_a,
          "32/64 bit data [B, h, w]: floor(clip((v - low) * factor, 0, 255) + 0.5) into out [h, w, B]; NaN and nodata -> 0. "
          "Returns the nodata pixel count.");
    m.def("render_curves", &render_curves, "data"_a, "xs"_a, "ys"_a, "offsets"_a, "nodata"_a.none(), "out"_a,
          "32/64 bit data [B, h, w] through numpy.interp per band into out [h, w, B]; NaN and nodata -> 0. "
          "Returns the nodata pixel count.");
    m.def("cut", &cut, "dst"_a, "pieces"_a, "elem"_a, "x0"_a, "y0"_a, "width"_a, "height"_a, "fill"_a,
          "Copy scene rectangle (x0, y0, width, height) out of pieces [(bytes [P, h, w * elem], row_off, col_off)] "
          "into dst [P, rows, cols * elem]; uncovered bytes of dst become fill.");
}
