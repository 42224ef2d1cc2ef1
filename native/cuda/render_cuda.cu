// CUDA kernels and the Stage of render_cuda.hpp.
#include "render_cuda.hpp"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

namespace minescan::cuda {
namespace {

void check(cudaError_t status, const char* call) {
    if (status != cudaSuccess)
        throw std::runtime_error(std::string(call) + " failed: " + cudaGetErrorName(status) + ": " + cudaGetErrorString(status));
}

#define MINESCAN_CUDA_CHECK(expr) check((expr), #expr)

// One thread per pixel (grid-stride): every band through its table, or 0 where the pixel is nodata.
template <typename T>
__global__ void render_table(const T* __restrict__ in, std::int64_t n, int bands, const std::uint8_t* __restrict__ tables,
                             std::int64_t len, const std::uint8_t* __restrict__ nodata, std::uint8_t* __restrict__ out) {
    for (std::int64_t p = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; p < n;
         p += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
        const bool masked = nodata != nullptr && nodata[p] != 0;
        for (int b = 0; b < bands; ++b)
            out[p * bands + b] = masked ? 0 : tables[b * len + in[b * n + p]];
    }
}

// blockIdx.z: the tile; x, y over its columns and rows.  Pixels past the tile's valid part are 0.
__global__ void cut_tiles(const std::uint8_t* __restrict__ rendered, std::int64_t width, int bands, std::int64_t row_off,
                          const std::int64_t* __restrict__ rects, std::int64_t size, std::uint8_t* __restrict__ batch) {
    const std::int64_t t = blockIdx.z;
    const std::int64_t x0 = rects[4 * t], y0 = rects[4 * t + 1], w = rects[4 * t + 2], h = rects[4 * t + 3];
    for (std::int64_t r = blockIdx.y * static_cast<std::int64_t>(blockDim.y) + threadIdx.y; r < size;
         r += static_cast<std::int64_t>(gridDim.y) * blockDim.y) {
        for (std::int64_t c = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; c < size;
             c += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
            std::uint8_t* dst = batch + ((t * size + r) * size + c) * bands;
            if (r < h && c < w) {
                const std::uint8_t* src = rendered + ((y0 + r - row_off) * width + (x0 + c)) * bands;
                for (int b = 0; b < bands; ++b) dst[b] = src[b];
            } else {
                for (int b = 0; b < bands; ++b) dst[b] = 0;
            }
        }
    }
}

}  // namespace

int device_count() {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
        cudaGetLastError();  // clear the sticky "no driver / no device" error
        return 0;
    }
    return count;
}

Stage::Stage(int device) : device_(device) {
    const int count = device_count();
    if (device < 0 || device >= count)
        throw std::runtime_error("CUDA device " + std::to_string(device) + " not found (" + std::to_string(count) +
                                 " visible to the CUDA runtime)");
    MINESCAN_CUDA_CHECK(cudaSetDevice(device));
    cudaDeviceProp props{};
    MINESCAN_CUDA_CHECK(cudaGetDeviceProperties(&props, device));
    name_ = props.name;
    try {
        cudaStream_t stream = nullptr;
        MINESCAN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
        stream_ = stream;
        for (auto& event : uploaded_) {
            cudaEvent_t e = nullptr;
            MINESCAN_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
            event = e;
        }
    } catch (...) {
        release();
        throw;
    }
}

Stage::~Stage() { release(); }

void Stage::release() {
    // Destructors must not throw: the stream is drained and everything freed, errors ignored.
    cudaSetDevice(device_);
    if (stream_ != nullptr) cudaStreamSynchronize(static_cast<cudaStream_t>(stream_));
    for (void*& p : staging_) {
        if (p != nullptr) cudaFreeHost(p);
        p = nullptr;
    }
    for (void* p : {static_cast<void*>(tables_), raw_, static_cast<void*>(mask_), static_cast<void*>(rendered_),
                    static_cast<void*>(batch_), static_cast<void*>(rects_)})
        if (p != nullptr) cudaFree(p);
    tables_ = mask_ = rendered_ = batch_ = nullptr;
    raw_ = nullptr;
    rects_ = nullptr;
    for (void*& e : uploaded_) {
        if (e != nullptr) cudaEventDestroy(static_cast<cudaEvent_t>(e));
        e = nullptr;
    }
    if (stream_ != nullptr) cudaStreamDestroy(static_cast<cudaStream_t>(stream_));
    stream_ = nullptr;
}

void Stage::reserve(void** ptr, std::int64_t* capacity, std::int64_t bytes, bool pinned) {
    if (bytes <= *capacity) return;
    MINESCAN_CUDA_CHECK(cudaSetDevice(device_));
    if (*ptr != nullptr) {
        // The stream may still read the old buffer: drain it first.
        MINESCAN_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(stream_)));
        if (pinned) MINESCAN_CUDA_CHECK(cudaFreeHost(*ptr));
        else MINESCAN_CUDA_CHECK(cudaFree(*ptr));
        *ptr = nullptr;
        *capacity = 0;
    }
    if (pinned) MINESCAN_CUDA_CHECK(cudaMallocHost(ptr, static_cast<std::size_t>(bytes)));
    else MINESCAN_CUDA_CHECK(cudaMalloc(ptr, static_cast<std::size_t>(bytes)));
    *capacity = bytes;
}

void Stage::set_tables(const std::uint8_t* tables, std::int64_t bands, std::int64_t len) {
    if (len != 256 && len != 65536) throw std::invalid_argument("tables must have 256 or 65536 entries per band");
    std::int64_t capacity = table_bands_ * table_len_;
    reserve(reinterpret_cast<void**>(&tables_), &capacity, bands * len, false);
    MINESCAN_CUDA_CHECK(cudaMemcpyAsync(tables_, tables, static_cast<std::size_t>(bands * len), cudaMemcpyHostToDevice,
                                        static_cast<cudaStream_t>(stream_)));
    MINESCAN_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(stream_)));  // the host tables may go
    table_bands_ = bands;
    table_len_ = len;
}

void Stage::render_rows(const void* data, int itemsize, std::int64_t bands, std::int64_t rows, std::int64_t width,
                        const std::uint8_t* nodata, std::int64_t row_off) {
    if (itemsize != 1 && itemsize != 2) throw std::invalid_argument("the GPU renders 8 or 16 bit data");
    if (tables_ == nullptr || table_bands_ != bands || table_len_ != (itemsize == 1 ? 256 : 65536))
        throw std::invalid_argument("set_tables first, with one table per band for this data type");
    MINESCAN_CUDA_CHECK(cudaSetDevice(device_));
    auto stream = static_cast<cudaStream_t>(stream_);
    const std::int64_t pixels = rows * width, raw = pixels * bands * itemsize, flags = nodata != nullptr ? pixels : 0;
    // Stage into pinned memory (a DMA copy, asynchronous), once the previous upload from this buffer is done.
    const int i = next_;
    next_ = 1 - next_;
    MINESCAN_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(uploaded_[i])));
    reserve(&staging_[i], &staging_bytes_[i], raw + flags, true);
    auto* staged = static_cast<std::uint8_t*>(staging_[i]);
    std::memcpy(staged, data, static_cast<std::size_t>(raw));
    if (flags) std::memcpy(staged + raw, nodata, static_cast<std::size_t>(flags));
    reserve(&raw_, &raw_bytes_, raw, false);
    MINESCAN_CUDA_CHECK(cudaMemcpyAsync(raw_, staged, static_cast<std::size_t>(raw), cudaMemcpyHostToDevice, stream));
    if (flags) {
        reserve(reinterpret_cast<void**>(&mask_), &mask_bytes_, flags, false);
        MINESCAN_CUDA_CHECK(cudaMemcpyAsync(mask_, staged + raw, static_cast<std::size_t>(flags), cudaMemcpyHostToDevice, stream));
    }
    MINESCAN_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(uploaded_[i]), stream));
    reserve(reinterpret_cast<void**>(&rendered_), &rendered_bytes_, pixels * bands, false);
    const int threads = 256;
    const int blocks = static_cast<int>(std::min<std::int64_t>((pixels + threads - 1) / threads, 65535));
    const std::uint8_t* mask = flags ? mask_ : nullptr;
    if (itemsize == 1)
        render_table<std::uint8_t><<<blocks, threads, 0, stream>>>(static_cast<const std::uint8_t*>(raw_), pixels,
                                                                   static_cast<int>(bands), tables_, 256, mask, rendered_);
    else
        render_table<std::uint16_t><<<blocks, threads, 0, stream>>>(static_cast<const std::uint16_t*>(raw_), pixels,
                                                                    static_cast<int>(bands), tables_, 65536, mask, rendered_);
    MINESCAN_CUDA_CHECK(cudaGetLastError());
    rows_ = rows;
    width_ = width;
    bands_ = bands;
    row_off_ = row_off;
}

void Stage::cut(const std::int64_t* rects, std::int64_t count, std::int64_t size) {
    if (rendered_ == nullptr) throw std::invalid_argument("render_rows first");
    for (std::int64_t t = 0; t < count; ++t) {
        const std::int64_t* r = rects + 4 * t;
        if (r[0] < 0 || r[2] < 0 || r[3] < 0 || r[2] > size || r[3] > size || r[0] + r[2] > width_ || r[1] < row_off_ ||
            r[1] + r[3] > row_off_ + rows_)
            throw std::invalid_argument("tile " + std::to_string(t) + " lies outside the rendered rows");
    }
    MINESCAN_CUDA_CHECK(cudaSetDevice(device_));
    auto stream = static_cast<cudaStream_t>(stream_);
    reserve(reinterpret_cast<void**>(&rects_), &rects_bytes_, count * 4 * static_cast<std::int64_t>(sizeof(std::int64_t)), false);
    MINESCAN_CUDA_CHECK(cudaMemcpyAsync(rects_, rects, static_cast<std::size_t>(count * 4) * sizeof(std::int64_t),
                                        cudaMemcpyHostToDevice, stream));
    reserve(reinterpret_cast<void**>(&batch_), &batch_bytes_, count * size * size * bands_, false);
    const dim3 threads(32, 8);
    const dim3 blocks(static_cast<unsigned>((size + 31) / 32), static_cast<unsigned>(std::min<std::int64_t>((size + 7) / 8, 65535)),
                      static_cast<unsigned>(count));
    cut_tiles<<<blocks, threads, 0, stream>>>(rendered_, width_, static_cast<int>(bands_), row_off_, rects_, size, batch_);
    MINESCAN_CUDA_CHECK(cudaGetLastError());
}

void Stage::download_batch(std::uint8_t* host, std::int64_t bytes) {
    if (bytes > batch_bytes_) throw std::invalid_argument("more bytes asked for than the batch holds");
    MINESCAN_CUDA_CHECK(cudaSetDevice(device_));
    MINESCAN_CUDA_CHECK(cudaMemcpyAsync(host, batch_, static_cast<std::size_t>(bytes), cudaMemcpyDeviceToHost,
                                        static_cast<cudaStream_t>(stream_)));
    MINESCAN_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(stream_)));
}

void Stage::synchronize() {
    MINESCAN_CUDA_CHECK(cudaSetDevice(device_));
    MINESCAN_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(stream_)));
}

}  // namespace minescan::cuda
