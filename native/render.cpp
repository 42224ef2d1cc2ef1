// CPU kernels of render.hpp.  Why native: numpy renders a band at a time (np.take per band into a strided
// view of the interleaved output, then a boolean-mask assignment for nodata, then np.stack copies every tile
// again into its batch); one pass here reads each band and the mask once and writes the interleaved pixels
// once.  Figures: benchmarks/native_render.md.
#include "render.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace minescan {
namespace {

// Nodata pixels to 0 in every band, after the fact: the mask is mostly all-clear, so it is read 8 flags at a
// time and only the rare words with a flag set are looked at (a branch per pixel in the rendering loop made it
// 1.3x slower).  Returns the nodata count.
std::int64_t zero_nodata(const std::uint8_t* nodata, std::int64_t n, std::int64_t bands, std::uint8_t* out) {
    if (nodata == nullptr) return 0;
    std::int64_t masked = 0, p = 0;
    for (; p + 8 <= n; p += 8) {
        std::uint64_t word;
        std::memcpy(&word, nodata + p, 8);
        if (word == 0) continue;
        for (std::int64_t q = p; q < p + 8; ++q) {
            if (nodata[q]) {
                std::memset(out + q * bands, 0, static_cast<std::size_t>(bands));
                ++masked;
            }
        }
    }
    for (; p < n; ++p) {
        if (nodata[p]) {
            std::memset(out + p * bands, 0, static_cast<std::size_t>(bands));
            ++masked;
        }
    }
    return masked;
}

template <typename T, std::int64_t B>
void table_fixed(const T* in, std::int64_t n, const std::uint8_t* tables, std::int64_t len, std::uint8_t* out) {
    const T* planes[B];
    const std::uint8_t* lut[B];
    for (std::int64_t b = 0; b < B; ++b) {
        planes[b] = in + b * n;
        lut[b] = tables + b * len;
    }
    for (std::int64_t p = 0; p < n; ++p) {
        std::uint8_t* px = out + p * B;
        for (std::int64_t b = 0; b < B; ++b) px[b] = lut[b][planes[b][p]];
    }
}

template <typename T>
std::int64_t table_any(const Planes& in, const std::uint8_t* tables, std::int64_t len, const std::uint8_t* nodata,
                       std::uint8_t* out) {
    const T* data = static_cast<const T*>(in.data);
    const std::int64_t n = in.pixels, bands = in.bands;
    switch (bands) {  // the usual band counts unrolled: the compiler keeps the band loop in registers
        case 1: table_fixed<T, 1>(data, n, tables, len, out); break;
        case 3: table_fixed<T, 3>(data, n, tables, len, out); break;
        case 4: table_fixed<T, 4>(data, n, tables, len, out); break;
        default:
            for (std::int64_t p = 0; p < n; ++p)
                for (std::int64_t b = 0; b < bands; ++b) out[p * bands + b] = tables[b * len + data[b * n + p]];
    }
    return zero_nodata(nodata, n, bands, out);
}

// numpy: subtract (in W), multiply, += 0.5, fmax(., 0.5), fmin(., 255.5), truncate.  NaN -> 0.5 -> 0.
template <typename T, typename W>
std::int64_t linear(const Planes& in, const double* low, const double* factor, const std::uint8_t* nodata,
                    std::uint8_t* out) {
    const T* data = static_cast<const T*>(in.data);
    const std::int64_t n = in.pixels, bands = in.bands;
    for (std::int64_t b = 0; b < bands; ++b) {
        const W lo = static_cast<W>(low[b]), f = static_cast<W>(factor[b]);
        const T* band = data + b * n;
        for (std::int64_t p = 0; p < n; ++p) {
            W v = static_cast<W>(band[p]) - lo;
            v = v * f;
            v = v + W(0.5);
            v = std::fmax(v, W(0.5));
            v = std::fmin(v, W(255.5));
            out[p * bands + b] = static_cast<std::uint8_t>(static_cast<int>(v));
        }
    }
    return zero_nodata(nodata, n, bands, out);
}

// numpy.interp's rule (numpy/_core/src/multiarray/compiled_base.c): left/right of the knots the end levels,
// on a knot its level, else slope * (x - xs[j]) + ys[j], with its fallback from the right knot when that is NaN.
inline double interp(double x, const double* xs, const double* ys, std::int64_t len) {
    if (std::isnan(x)) return x;
    if (x < xs[0]) return ys[0];
    if (x > xs[len - 1]) return ys[len - 1];
    const std::int64_t j = (std::upper_bound(xs, xs + len, x) - xs) - 1;  // xs[j] <= x < xs[j + 1]
    if (j == len - 1 || xs[j] == x) return ys[j];
    const double slope = (ys[j + 1] - ys[j]) / (xs[j + 1] - xs[j]);
    double r = slope * (x - xs[j]) + ys[j];
    if (std::isnan(r)) {
        r = slope * (x - xs[j + 1]) + ys[j + 1];
        if (std::isnan(r) && ys[j] == ys[j + 1]) r = ys[j];
    }
    return r;
}

template <typename T>
std::int64_t curves(const Planes& in, const double* xs, const double* ys, const std::int64_t* offsets,
                    const std::uint8_t* nodata, std::uint8_t* out) {
    const T* data = static_cast<const T*>(in.data);
    const std::int64_t n = in.pixels, bands = in.bands;
    for (std::int64_t b = 0; b < bands; ++b) {
        const double* bx = xs + offsets[b];
        const double* by = ys + offsets[b];
        const std::int64_t len = offsets[b + 1] - offsets[b];
        const T* band = data + b * n;
        for (std::int64_t p = 0; p < n; ++p) {
            double v = interp(static_cast<double>(band[p]), bx, by, len);
            if (std::isnan(v)) v = 0.0;  // numpy.nan_to_num(nan=0.0); infinities took the end levels
            v = std::floor(std::min(std::max(v, 0.0), 255.0) + 0.5);
            out[p * bands + b] = static_cast<std::uint8_t>(static_cast<int>(v));
        }
    }
    return zero_nodata(nodata, n, bands, out);
}

}  // namespace

std::int64_t render_table8(const Planes& in, const std::uint8_t* tables, const std::uint8_t* nodata, std::uint8_t* out) {
    return table_any<std::uint8_t>(in, tables, 256, nodata, out);
}

std::int64_t render_table16(const Planes& in, const std::uint8_t* tables, const std::uint8_t* nodata, std::uint8_t* out) {
    return table_any<std::uint16_t>(in, tables, 65536, nodata, out);
}

std::int64_t render_linear(const Planes& in, char kind, int itemsize, const double* low, const double* factor,
                           const std::uint8_t* nodata, std::uint8_t* out) {
    if (kind == 'f' && itemsize == 4) return linear<float, float>(in, low, factor, nodata, out);
    if (kind == 'f' && itemsize == 8) return linear<double, double>(in, low, factor, nodata, out);
    if (kind == 'i' && itemsize == 4) return linear<std::int32_t, double>(in, low, factor, nodata, out);
    if (kind == 'i' && itemsize == 8) return linear<std::int64_t, double>(in, low, factor, nodata, out);
    if (kind == 'u' && itemsize == 4) return linear<std::uint32_t, double>(in, low, factor, nodata, out);
    if (kind == 'u' && itemsize == 8) return linear<std::uint64_t, double>(in, low, factor, nodata, out);
    return -1;
}

std::int64_t render_curves(const Planes& in, char kind, int itemsize, const double* xs, const double* ys,
                           const std::int64_t* offsets, const std::uint8_t* nodata, std::uint8_t* out) {
    if (kind == 'f' && itemsize == 4) return curves<float>(in, xs, ys, offsets, nodata, out);
    if (kind == 'f' && itemsize == 8) return curves<double>(in, xs, ys, offsets, nodata, out);
    if (kind == 'i' && itemsize == 4) return curves<std::int32_t>(in, xs, ys, offsets, nodata, out);
    if (kind == 'i' && itemsize == 8) return curves<std::int64_t>(in, xs, ys, offsets, nodata, out);
    if (kind == 'u' && itemsize == 4) return curves<std::uint32_t>(in, xs, ys, offsets, nodata, out);
    if (kind == 'u' && itemsize == 8) return curves<std::uint64_t>(in, xs, ys, offsets, nodata, out);
    return -1;
}

void cut(const Bytes2D& dst, const Piece* pieces, std::size_t count, std::int64_t elem, std::int64_t x0,
         std::int64_t y0, std::int64_t width, std::int64_t height, std::uint8_t fill) {
    const bool covered = width * elem == dst.row_bytes && height == dst.rows;
    if (!covered) {  // a tile past the scene's edge: its padding is fill (pieces overwrite the valid part)
        for (std::int64_t p = 0; p < dst.planes; ++p)
            for (std::int64_t r = 0; r < dst.rows; ++r)
                std::memset(dst.base + p * dst.plane_stride + r * dst.row_stride, fill, static_cast<std::size_t>(dst.row_bytes));
    }
    const std::int64_t x1 = x0 + width, y1 = y0 + height;
    for (std::size_t i = 0; i < count; ++i) {
        const Piece& s = pieces[i];
        const std::int64_t cx0 = std::max(x0, s.col_off), cy0 = std::max(y0, s.row_off);
        const std::int64_t cx1 = std::min(x1, s.col_off + s.cols), cy1 = std::min(y1, s.row_off + s.rows);
        if (cx1 <= cx0 || cy1 <= cy0) continue;
        const std::size_t bytes = static_cast<std::size_t>((cx1 - cx0) * elem);
        for (std::int64_t p = 0; p < dst.planes; ++p) {
            const std::uint8_t* src = s.base + p * s.plane_stride + (cy0 - s.row_off) * s.row_stride + (cx0 - s.col_off) * elem;
            std::uint8_t* out = dst.base + p * dst.plane_stride + (cy0 - y0) * dst.row_stride + (cx0 - x0) * elem;
            for (std::int64_t r = cy0; r < cy1; ++r, src += s.row_stride, out += dst.row_stride)
                std::memcpy(out, src, bytes);
        }
    }
}

}  // namespace minescan
