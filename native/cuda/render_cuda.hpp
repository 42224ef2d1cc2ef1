// Render + cut on the GPU: the CUDA counterpart of ../render.hpp for 8 and 16 bit scenes (tables per band).
//
// Plain C++ (no CUDA types), so the Python bindings compile with the host compiler.  One Stage owns, in one
// place, everything it allocates on the device and the host (NVIDIA's common_runtime.py pattern): its stream,
// the band tables, two pinned host staging buffers (uploads of raw rows overlap the previous rows' kernels),
// the raw and rendered rows on the device and the batch buffer.  Every CUDA call is checked; a failure throws
// std::runtime_error naming the call and CUDA's own message.  The results are bit for bit those of the CPU
// kernels (tests/test_native_cuda.py, on a GPU).
#pragma once

#include <cstdint>
#include <string>

namespace minescan::cuda {

// GPUs the CUDA runtime sees; 0 where there is no driver or no device (never throws).
int device_count();

class Stage {
  public:
    explicit Stage(int device);
    ~Stage();
    Stage(const Stage&) = delete;
    Stage& operator=(const Stage&) = delete;

    // The band tables [bands, len] (len 256 or 65536), as render.hpp's render_table8/16 take them.
    void set_tables(const std::uint8_t* tables, std::int64_t bands, std::int64_t len);
    // Upload ``rows`` full-width rows of raw data [bands, rows, width] (itemsize 1 or 2) starting at scene row
    // ``row_off``, with their nodata flags [rows, width] (or null), and render them on the device.
    void render_rows(const void* data, int itemsize, std::int64_t bands, std::int64_t rows, std::int64_t width,
                     const std::uint8_t* nodata, std::int64_t row_off);
    // Cut ``count`` tiles, each (x0, y0, valid width, valid height) in scene pixels and inside the rendered rows,
    // into the device batch [count, size, size, bands]; padding is 0.
    void cut(const std::int64_t* rects, std::int64_t count, std::int64_t size);
    // The device batch: its address (for ONNX Runtime's I/O binding) and a copy to the host (waits for the stream).
    std::uintptr_t batch_pointer() const { return reinterpret_cast<std::uintptr_t>(batch_); }
    std::uintptr_t stream_handle() const { return reinterpret_cast<std::uintptr_t>(stream_); }
    void download_batch(std::uint8_t* host, std::int64_t bytes);
    void synchronize();
    std::string device_name() const { return name_; }

  private:
    void reserve(void** ptr, std::int64_t* capacity, std::int64_t bytes, bool pinned);
    void release();

    int device_ = 0;
    std::string name_;
    void* stream_ = nullptr;       // cudaStream_t
    void* uploaded_[2] = {nullptr, nullptr};  // cudaEvent_t: staging buffer i may be written again
    int next_ = 0;
    std::uint8_t* tables_ = nullptr;
    std::int64_t table_len_ = 0, table_bands_ = 0;
    void* staging_[2] = {nullptr, nullptr};
    std::int64_t staging_bytes_[2] = {0, 0};
    void* raw_ = nullptr;
    std::int64_t raw_bytes_ = 0;
    std::uint8_t* mask_ = nullptr;
    std::int64_t mask_bytes_ = 0;
    std::uint8_t* rendered_ = nullptr;
    std::int64_t rendered_bytes_ = 0;
    std::int64_t rows_ = 0, width_ = 0, bands_ = 0, row_off_ = 0;
    std::uint8_t* batch_ = nullptr;
    std::int64_t batch_bytes_ = 0;
    std::int64_t* rects_ = nullptr;
    std::int64_t rects_bytes_ = 0;
};

}  // namespace minescan::cuda
