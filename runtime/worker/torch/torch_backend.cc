/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The torchscript backend: a loki_backend_v2 plugin (C ABI outside, C++ and libtorch inside)
 * that runs a TorchScript file. init loads the model named by args.model, sets the intra-op
 * threads (pinned to the worker's cores), and warms up; a load or warm-up failure returns an
 * error and writes one line naming the file to stderr (lokid's log). infer decodes each
 * query's payload (a tensor, or a JPEG/PNG resized to the model's input) into one batch
 * tensor, runs it once, and post-processes per query: the raw output as a tensor, a
 * classifier's top-k as JSON, or a detector's boxes (decoded, NMS) as JSON plus one crop per
 * box for each child task. A query whose payload does not fit fails alone. No exception
 * crosses the C ABI. docs/vision.md has the formats and every argument.
 */
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/api/include/torch/cuda.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/script.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "loki/backend.h"
#include "loki/vision.h"

namespace
{

enum class Post { None, Topk, Detect };

struct CropSpec {
    int h = 0, w = 0;
    std::vector<int> classes; /* empty: every class */
};

/* What a query's crops are cut from, and how model pixels map to it. */
struct Source {
    loki_image_view view;
    float sx, sy; /* source pixels per model pixel */
    bool has_box;
    float box[4];
};

struct State {
    std::string variant, model_path;
    torch::jit::Module module;
    torch::Device device{torch::kCPU};
    loki_dtype in_dtype = LOKI_DTYPE_FLOAT32;
    std::vector<int64_t> shape; /* per sample */
    size_t sample_elems = 1, sample_bytes = 0;
    std::vector<float> mean, stdv;
    Post post = Post::None;
    int topk = 5;
    bool softmax = true;
    std::vector<std::string> labels;
    float threshold = 0.5f, nms_iou = 0.45f;
    int max_boxes = 16, background = 0, max_candidates = 4096;
    float box_weights[4] = {10, 10, 5, 5};
    uint64_t max_pixels = 64ull << 20;
    int n_children = 0;
    std::vector<std::string> child_names;
    std::vector<CropSpec> crops;
    int max_batch = 1;
    std::vector<uint8_t> staging;
    std::vector<loki_image_decoder *> decoders; /* per batch slot, made at first use */
    std::vector<int> slots;                     /* query -> batch slot, -1: failed */
    std::vector<Source> src;                    /* per slot */
    std::vector<std::vector<uint8_t>> aligned;  /* per slot: unaligned tensor data, copied */
    std::vector<loki_det> dets;
    std::vector<char> text;

    ~State()
    {
        for (auto *d : decoders)
            loki_image_decoder_destroy(d);
    }
};

/* One line to the worker's stderr, which lokid logs: the only way an init failure explains
 * itself (init returns an errno). */
__attribute__((format(printf, 2, 3))) void say(const State *s, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    fprintf(stderr, "loki torchscript: variant %s: %s\n", s ? s->variant.c_str() : "?", line);
}

/* The first line of a c10 error, without libtorch's backtrace. */
std::string short_what(const std::exception &e)
{
    const char *w = e.what();
    if (auto *ce = dynamic_cast<const c10::Error *>(&e))
        w = ce->what_without_backtrace();
    std::string s(w);
    /* the interpreter's "The following operation failed..." and a TorchScript traceback
     * come first; the reason is the last line */
    while (!s.empty() && (s.back() == '\n' || s.back() == ' '))
        s.pop_back();
    size_t nl = s.find('\n');
    if (nl == std::string::npos)
        return s;
    if (s.compare(0, 14, "The following ") == 0)
        return s.substr(s.rfind('\n') + 1);
    s.resize(nl);
    return s;
}

bool parse_int(const char *v, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi)
        return false;
    *out = x;
    return true;
}

bool parse_float(const char *v, float *out)
{
    char *end;
    errno = 0;
    float x = strtof(v, &end);
    if (errno || end == v || *end)
        return false;
    *out = x;
    return true;
}

/* "a,b,c" (or a 'x' between) into numbers; false on junk. */
template <typename T> bool parse_list(const char *v, const char *seps, std::vector<T> *out)
{
    out->clear();
    std::string s(v);
    size_t at = 0;
    while (at <= s.size()) {
        size_t e = s.find_first_of(seps, at);
        if (e == std::string::npos)
            e = s.size();
        std::string tok = s.substr(at, e - at);
        while (!tok.empty() && tok.front() == ' ')
            tok.erase(0, 1);
        while (!tok.empty() && tok.back() == ' ')
            tok.pop_back();
        char *end;
        errno = 0;
        double x = strtod(tok.c_str(), &end);
        if (tok.empty() || errno || *end)
            return false;
        out->push_back((T)x);
        at = e + 1;
    }
    return !out->empty();
}

torch::ScalarType scalar_of(loki_dtype d)
{
    switch (d) {
    case LOKI_DTYPE_UINT8:
        return torch::kUInt8;
    case LOKI_DTYPE_INT32:
        return torch::kInt32;
    case LOKI_DTYPE_INT64:
        return torch::kInt64;
    case LOKI_DTYPE_FLOAT64:
        return torch::kFloat64;
    default:
        return torch::kFloat32;
    }
}

bool dtype_of(torch::ScalarType t, loki_dtype *out)
{
    switch (t) {
    case torch::kUInt8:
        *out = LOKI_DTYPE_UINT8;
        return true;
    case torch::kInt32:
        *out = LOKI_DTYPE_INT32;
        return true;
    case torch::kInt64:
        *out = LOKI_DTYPE_INT64;
        return true;
    case torch::kFloat32:
        *out = LOKI_DTYPE_FLOAT32;
        return true;
    case torch::kFloat64:
        *out = LOKI_DTYPE_FLOAT64;
        return true;
    default:
        return false;
    }
}

std::string shape_text(const int64_t *d, int n)
{
    std::string s = "[";
    for (int i = 0; i < n; i++)
        s += (i ? "," : "") + std::to_string(d[i]);
    return s + "]";
}

/* ---- init ------------------------------------------------------------------------------------ */

/* Pin libtorch's intra-op threads, one per core of the worker's CPU set, round robin (the
 * supervisor bound the worker; its threads inherit the set, this spreads them over it). */
void pin_threads(State *s, int threads)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set))
        return;
    std::vector<int> cpus;
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &set))
            cpus.push_back(c);
    if (cpus.empty())
        return;
    if (threads > (int)cpus.size())
        say(s, "threads %d > the %zu cores this worker may run on: they share them", threads,
            cpus.size());
    if (threads <= 1 || cpus.size() <= 1)
        return;
    at::parallel_for(0, threads, 1, [&](int64_t b, int64_t e) {
        (void)b, (void)e;
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(cpus[(size_t)at::get_thread_num() % cpus.size()], &one);
        pthread_setaffinity_np(pthread_self(), sizeof(one), &one);
    });
}

int read_labels(State *s, const char *path)
{
    std::ifstream f(path);
    if (!f) {
        say(s, "labels file %s: %s", path, strerror(errno));
        return -ENOENT;
    }
    std::string line;
    while (std::getline(f, line)) {
        if (!line.empty() && line.back() == '\r')
            line.pop_back();
        if (line.size() > 64)
            line.resize(64);
        s->labels.push_back(line);
    }
    return 0;
}

int parse_args(State *s, const loki_backend_config *cfg)
{
    const char *v;
    long x;
    if (!(v = loki_backend_arg(cfg, "model"))) {
        say(s, "args.model (a TorchScript file) is required");
        return -EINVAL;
    }
    s->model_path = v;
    v = loki_backend_arg(cfg, "shape");
    if (!v || !parse_list(v, "x,", &s->shape) || s->shape.size() > 4) {
        say(s, "args.shape: the input of one query, e.g. 3x224x224 (C x H x W), got '%s'",
            v ? v : "nothing");
        return -EINVAL;
    }
    for (int64_t d : s->shape) {
        if (d <= 0 || d > 1 << 16) {
            say(s, "args.shape: %s has a bad dimension", v);
            return -EINVAL;
        }
        s->sample_elems *= (size_t)d;
    }
    if ((v = loki_backend_arg(cfg, "dtype")) && loki_dtype_parse(v, &s->in_dtype)) {
        say(s, "args.dtype '%s': uint8, int32, int64, float32 or float64", v);
        return -EINVAL;
    }
    s->sample_bytes = s->sample_elems * loki_dtype_size(s->in_dtype);
    bool image = s->shape.size() == 3 && (s->shape[0] == 1 || s->shape[0] == 3);
    if (image && s->shape[2] > 4096) {
        say(s, "args.shape: %s is wider than the resizer's 4096", v);
        return -EINVAL;
    }
    for (const char *k : {"mean", "std"}) {
        std::vector<float> *dst = k[0] == 'm' ? &s->mean : &s->stdv;
        if (!(v = loki_backend_arg(cfg, k)))
            continue;
        if (!image || !parse_list(v, ",", dst) || (int64_t)dst->size() != s->shape[0]) {
            say(s, "args.%s: one number per channel of an image input (C x H x W)", k);
            return -EINVAL;
        }
    }
    for (float d : s->stdv)
        if (d == 0.f) {
            say(s, "args.std: 0");
            return -EINVAL;
        }
    if ((v = loki_backend_arg(cfg, "device"))) {
        std::string d(v);
        if (d == "cuda") {
            if (!torch::cuda::is_available()) {
                say(s, "device cuda: this libtorch has no CUDA or sees no GPU");
                return -ENODEV;
            }
            /* lokid's supervisor gives each worker CUDA_VISIBLE_DEVICES=<its GPU>: that GPU
             * is then device 0; without it (a worker started by hand) cfg->gpu counts */
            int idx = getenv("CUDA_VISIBLE_DEVICES") || cfg->gpu < 0 ? 0 : cfg->gpu;
            s->device = torch::Device(torch::kCUDA, (c10::DeviceIndex)idx);
        } else if (d != "cpu") {
            say(s, "args.device '%s': cpu or cuda", v);
            return -EINVAL;
        }
    }
    long threads = 1;
    if ((v = loki_backend_arg(cfg, "threads")) && !parse_int(v, 1, 256, &threads)) {
        say(s, "args.threads '%s': 1..256", v);
        return -EINVAL;
    }
    at::set_num_threads((int)threads);
    try {
        at::set_num_interop_threads(1);
    } catch (const std::exception &) {
        /* already set by the first of two variants in this process */
    }
    pin_threads(s, (int)threads);
    if ((v = loki_backend_arg(cfg, "max_pixels")) && !parse_int(v, 1, 1L << 30, &x)) {
        say(s, "args.max_pixels '%s'", v);
        return -EINVAL;
    } else if (v) {
        s->max_pixels = (uint64_t)x;
    }
    if ((v = loki_backend_arg(cfg, "labels")) && read_labels(s, v))
        return -ENOENT;
    std::string post = (v = loki_backend_arg(cfg, "postprocess")) ? v : "none";
    if (post == "none") {
        s->post = Post::None;
    } else if (post == "classify_topk") {
        s->post = Post::Topk;
        if ((v = loki_backend_arg(cfg, "topk")) && !parse_int(v, 1, 100, &x)) {
            say(s, "args.topk '%s': 1..100", v);
            return -EINVAL;
        } else if (v) {
            s->topk = (int)x;
        }
        if ((v = loki_backend_arg(cfg, "softmax")))
            s->softmax = !strcmp(v, "true") || !strcmp(v, "1");
    } else if (post == "detect_crops") {
        s->post = Post::Detect;
        if (!image) {
            say(s, "postprocess detect_crops needs an image input (shape C x H x W)");
            return -EINVAL;
        }
        struct {
            const char *key;
            float *dst;
        } fl[] = {{"score_threshold", &s->threshold}, {"nms_iou", &s->nms_iou}};
        for (auto &f : fl)
            if ((v = loki_backend_arg(cfg, f.key)) && !parse_float(v, f.dst)) {
                say(s, "args.%s '%s' is not a number", f.key, v);
                return -EINVAL;
            }
        if ((v = loki_backend_arg(cfg, "max_boxes")) && !parse_int(v, 1, 1024, &x)) {
            say(s, "args.max_boxes '%s': 1..1024", v);
            return -EINVAL;
        } else if (v) {
            s->max_boxes = (int)x;
        }
        if ((v = loki_backend_arg(cfg, "background")) && !parse_int(v, -1, 1 << 20, &x)) {
            say(s, "args.background '%s': a class index, or -1 for none", v);
            return -EINVAL;
        } else if (v) {
            s->background = (int)x;
        }
        std::vector<float> w;
        if ((v = loki_backend_arg(cfg, "box_weights"))) {
            if (!parse_list(v, ",", &w) || w.size() != 4 || !w[0] || !w[1] || !w[2] || !w[3]) {
                say(s, "args.box_weights '%s': four non-zero numbers", v);
                return -EINVAL;
            }
            memcpy(s->box_weights, w.data(), sizeof(s->box_weights));
        }
        s->crops.resize((size_t)cfg->n_children);
        for (int c = 0; c < cfg->n_children; c++) {
            std::string name = cfg->child_tasks ? cfg->child_tasks[c] : std::to_string(c);
            s->child_names.push_back(name);
            std::vector<int> hw;
            v = loki_backend_arg(cfg, ("crop." + name).c_str());
            if (!v)
                v = loki_backend_arg(cfg, "crop");
            if (!v || !parse_list(v, "x,", &hw) || hw.size() != 2 || hw[0] <= 0 || hw[1] <= 0 ||
                hw[0] > 4096 || hw[1] > 4096) {
                say(s, "args.crop.%s (or args.crop): the child's input, H x W, got '%s'",
                    name.c_str(), v ? v : "nothing");
                return -EINVAL;
            }
            s->crops[c].h = hw[0];
            s->crops[c].w = hw[1];
            if ((v = loki_backend_arg(cfg, ("classes." + name).c_str())) &&
                !parse_list(v, ",", &s->crops[c].classes)) {
                say(s, "args.classes.%s '%s': class indexes, comma separated", name.c_str(), v);
                return -EINVAL;
            }
        }
        s->n_children = cfg->n_children;
        s->dets.resize((size_t)s->max_candidates);
    } else {
        say(s, "args.postprocess '%s': none, classify_topk or detect_crops", post.c_str());
        return -EINVAL;
    }
    /* the largest text output: a detector's boxes or a classifier's top-k, labels included */
    s->text.resize(1024 + (size_t)(s->post == Post::Detect ? s->max_boxes : s->topk) *
                              (200 + 64 * 6 + 32 * (size_t)s->n_children));
    return 0;
}

/* The model's outputs as CPU tensors: one tensor, or a tuple or list of them. */
std::vector<torch::Tensor> outputs_of(const c10::IValue &out)
{
    std::vector<torch::Tensor> v;
    if (out.isTensor()) {
        v.push_back(out.toTensor());
    } else if (out.isTuple()) {
        for (const auto &e : out.toTupleRef().elements())
            v.push_back(e.toTensor());
    } else if (out.isTensorList()) {
        for (const auto &t : out.toTensorList())
            v.push_back(t);
    } else if (out.isList()) {
        for (const auto &e : out.toListRef())
            v.push_back(e.toTensor());
    } else {
        throw std::runtime_error("the model returned neither a tensor nor a tuple or list of them");
    }
    for (auto &t : v)
        t = t.to(torch::kCPU).contiguous();
    return v;
}

/* Check the outputs' shapes against the postprocess, for a batch of @n; "" when they fit. */
std::string check_outputs(const State *s, const std::vector<torch::Tensor> &o, int64_t n)
{
    if (o.empty() || o[0].dim() < 1 || o[0].size(0) != n)
        return "the first output is not a batch of " + std::to_string(n);
    if (s->post == Post::Topk && o[0].dim() != 2)
        return "classify_topk needs a [N, classes] output, got " +
               shape_text(o[0].sizes().data(), (int)o[0].dim());
    if (s->post == Post::Detect) {
        bool two = o.size() == 2, three = o.size() == 3;
        if (!two && !three)
            return "detect_crops needs (boxes [N,A,4], scores [N,A,C]) or (deltas [N,A,4], "
                   "logits [N,A,C], anchors [A,4])";
        if (o[0].dim() != 3 || o[0].size(2) != 4 || o[1].dim() != 3 || o[1].size(0) != n ||
            o[1].size(1) != o[0].size(1))
            return "detect_crops: boxes must be [N,A,4] and scores [N,A,C]";
        if (three && (o[2].dim() != 2 || o[2].size(0) != o[0].size(1) || o[2].size(1) != 4))
            return "detect_crops: anchors must be [A,4]";
    }
    return "";
}

int torch_init_impl(const loki_backend_config *cfg, void **state)
{
    auto s = std::make_unique<State>();
    s->variant = cfg->variant ? cfg->variant : "?";
    int rc = parse_args(s.get(), cfg);
    if (rc)
        return rc;
    s->max_batch = cfg->max_batch > 0 ? cfg->max_batch : 1;
    if (access(s->model_path.c_str(), R_OK)) {
        rc = -errno;
        say(s.get(), "model file %s: %s", s->model_path.c_str(), strerror(errno));
        return rc;
    }
    try {
        s->module = torch::jit::load(s->model_path, s->device);
        s->module.eval();
    } catch (const std::exception &e) {
        say(s.get(), "model file %s is not a TorchScript model this libtorch loads: %s",
            s->model_path.c_str(), short_what(e).c_str());
        return -EINVAL;
    }
    s->staging.resize((size_t)s->max_batch * s->sample_bytes);
    s->decoders.assign((size_t)s->max_batch, nullptr);
    s->slots.assign((size_t)s->max_batch, -1);
    s->src.resize((size_t)s->max_batch);
    s->aligned.resize((size_t)s->max_batch);
    /* warm up at batch 1 and at the largest batch: shape errors show here, not per query, and
     * the executor's profiling runs are done before the first real batch */
    long warm = 2;
    const char *v = loki_backend_arg(cfg, "warmup");
    if (v && !parse_int(v, 0, 100, &warm)) {
        say(s.get(), "args.warmup '%s': 0..100", v);
        return -EINVAL;
    }
    try {
        c10::InferenceMode guard;
        for (int64_t n : {(int64_t)1, (int64_t)s->max_batch}) {
            std::vector<int64_t> dims{n};
            dims.insert(dims.end(), s->shape.begin(), s->shape.end());
            auto x = torch::zeros(dims, torch::TensorOptions().dtype(scalar_of(s->in_dtype)))
                         .to(s->device);
            for (long k = 0; k < (warm > 0 ? warm : 1); k++) {
                auto o = outputs_of(s->module.forward({x}));
                std::string why = check_outputs(s.get(), o, n);
                if (!why.empty()) {
                    say(s.get(), "model file %s: %s", s->model_path.c_str(), why.c_str());
                    return -EINVAL;
                }
            }
            if (s->max_batch == 1)
                break;
        }
    } catch (const std::exception &e) {
        say(s.get(), "model file %s fails on an input of %s %s: %s", s->model_path.c_str(),
            loki_dtype_name(s->in_dtype), shape_text(s->shape.data(), (int)s->shape.size()).c_str(),
            short_what(e).c_str());
        return -EINVAL;
    }
    *state = s.release();
    return 0;
}

/* ---- infer ----------------------------------------------------------------------------------- */

/* Fill batch slot @slot from query @q; on failure a message in @why and false. */
bool fill(State *s, int slot, const loki_backend_query *q, std::string *why)
{
    uint8_t *dst = s->staging.data() + (size_t)slot * s->sample_bytes;
    Source *src = &s->src[(size_t)slot];
    src->has_box = false;
    src->view.data = nullptr;
    char err[160] = "";
    const bool image_model = s->shape.size() == 3;
    loki_resize_out how = {s->in_dtype, s->mean.empty() ? nullptr : s->mean.data(),
                           s->stdv.empty() ? nullptr : s->stdv.data()};
    if (loki_image_sniff(q->payload, q->payload_len) != LOKI_IMAGE_NONE) {
        if (!image_model ||
            (s->in_dtype != LOKI_DTYPE_FLOAT32 && s->in_dtype != LOKI_DTYPE_UINT8)) {
            *why = "an image, but the model's input is not a uint8 or float32 C x H x W";
            return false;
        }
        if (!s->decoders[(size_t)slot] && loki_image_decoder_create(&s->decoders[(size_t)slot])) {
            *why = "out of memory";
            return false;
        }
        const uint8_t *px;
        int w, h, c = (int)s->shape[0];
        if (loki_image_decode(s->decoders[(size_t)slot], q->payload, q->payload_len, c,
                              s->max_pixels, &px, &w, &h, err, sizeof(err))) {
            *why = err;
            return false;
        }
        src->view = {px, LOKI_DTYPE_UINT8, c, h, w, 1, (ptrdiff_t)w * c, c};
        loki_image_resize(&src->view, 0, 0, (float)w, (float)h, (int)s->shape[1], (int)s->shape[2],
                          &how, dst);
        src->sx = (float)w / (float)s->shape[2];
        src->sy = (float)h / (float)s->shape[1];
        return true;
    }
    loki_tensor t;
    if (loki_tensor_parse(q->payload, q->payload_len, &t, err, sizeof(err))) {
        *why = q->payload_len ? err : "an empty payload (a tensor or an image expected)";
        return false;
    }
    /* typed reads of data another encoder left unaligned go through an aligned copy */
    size_t esz = loki_dtype_size(t.dtype);
    if ((uintptr_t)t.data % esz) {
        std::vector<uint8_t> &a = s->aligned[(size_t)slot];
        if (a.size() < t.data_len + 16)
            a.resize(t.data_len + 16);
        uint8_t *base = a.data() + (16 - (uintptr_t)a.data() % 16) % 16;
        memcpy(base, t.data, t.data_len);
        t.data = base;
    }
    /* [shape] or [1, shape] */
    int off = t.ndim == (int)s->shape.size() + 1 && t.shape[0] == 1 ? 1 : 0;
    bool same = t.ndim - off == (int)s->shape.size();
    for (size_t i = 0; same && i < s->shape.size(); i++)
        same = t.shape[i + (size_t)off] == s->shape[i];
    if (!same) {
        *why = "input shape " + shape_text(t.shape, t.ndim) + " is not the model's " +
               shape_text(s->shape.data(), (int)s->shape.size());
        return false;
    }
    const size_t n = s->sample_elems;
    if (t.dtype == s->in_dtype) {
        memcpy(dst, t.data, s->sample_bytes); /* the one copy: arena to batch */
    } else if (t.dtype == LOKI_DTYPE_UINT8 && s->in_dtype == LOKI_DTYPE_FLOAT32 && image_model) {
        /* pixels: scaled to [0, 1] and normalised, as a decoded image is */
        const size_t plane = (size_t)(s->shape[1] * s->shape[2]);
        const uint8_t *from = (const uint8_t *)t.data;
        float *to = (float *)dst;
        for (size_t c = 0; c < (size_t)s->shape[0]; c++) {
            float m = how.mean ? how.mean[c] : 0.f, sd = how.std ? how.std[c] : 1.f;
            float a = 1.f / (255.f * sd), b = -m / sd;
            for (size_t j = 0; j < plane; j++)
                to[c * plane + j] = (float)from[c * plane + j] * a + b;
        }
    } else if (s->in_dtype == LOKI_DTYPE_FLOAT32 || s->in_dtype == LOKI_DTYPE_FLOAT64 ||
               ((s->in_dtype == LOKI_DTYPE_INT64 || s->in_dtype == LOKI_DTYPE_INT32) &&
                (t.dtype == LOKI_DTYPE_INT32 || t.dtype == LOKI_DTYPE_INT64 ||
                 t.dtype == LOKI_DTYPE_UINT8))) {
        /* a plain conversion, through libtorch (no normalisation) */
        auto from = torch::from_blob(const_cast<void *>(t.data), {(int64_t)n},
                                     torch::TensorOptions().dtype(scalar_of(t.dtype)));
        auto to = torch::from_blob(dst, {(int64_t)n},
                                   torch::TensorOptions().dtype(scalar_of(s->in_dtype)));
        to.copy_(from);
    } else {
        *why = std::string("a ") + loki_dtype_name(t.dtype) + " tensor for a " +
               loki_dtype_name(s->in_dtype) + " model";
        return false;
    }
    if (image_model && (t.dtype == LOKI_DTYPE_UINT8 || t.dtype == LOKI_DTYPE_FLOAT32)) {
        const int64_t c = s->shape[0], h = s->shape[1], w = s->shape[2];
        src->view = {t.data, t.dtype, (int)c, (int)h, (int)w, h * w, w, 1};
        src->sx = src->sy = 1.f;
    }
    src->has_box = t.has_box;
    memcpy(src->box, t.box, sizeof(src->box));
    return true;
}

/* ---- text output --------------------------------------------------------------------------- */

struct Text {
    char *p;
    size_t len, cap;
    __attribute__((format(printf, 2, 3))) void add(const char *fmt, ...)
    {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(p + len, cap - len, fmt, ap);
        va_end(ap);
        if (n > 0)
            len = len + (size_t)n < cap ? len + (size_t)n : cap - 1;
    }
    void str(const std::string &s)
    {
        add("\"");
        for (char c : s) {
            if (c == '"' || c == '\\')
                add("\\%c", c);
            else if ((unsigned char)c < 0x20)
                add("\\u%04x", c);
            else
                add("%c", c);
        }
        add("\"");
    }
};

void emit_text(loki_backend_out *out, int i, const Text &t)
{
    void *p = out->output(out, i, (uint32_t)t.len);
    if (p)
        memcpy(p, t.p, t.len);
}

void label(const State *s, Text *t, int cls)
{
    if (cls >= 0 && (size_t)cls < s->labels.size()) {
        t->add(",\"label\":");
        t->str(s->labels[(size_t)cls]);
    }
}

void post_none(State *s, int i, int slot, const torch::Tensor &o, loki_backend_out *out)
{
    torch::Tensor r = o[slot];
    loki_dtype dt;
    if (!dtype_of(r.scalar_type(), &dt)) {
        r = r.to(torch::kFloat32);
        dt = LOKI_DTYPE_FLOAT32;
    }
    r = r.contiguous();
    const Source *src = &s->src[(size_t)slot];
    size_t data = (size_t)r.nbytes();
    size_t hdr = loki_tensor_header_len(dt, (int)r.dim(), src->has_box);
    uint8_t *p = (uint8_t *)out->output(out, i, (uint32_t)(hdr + data));
    if (!p)
        return;
    loki_tensor_write_header(p, dt, (int)r.dim(), r.sizes().data(), data,
                             src->has_box ? src->box : nullptr);
    memcpy(p + hdr, r.data_ptr(), data);
}

void post_topk(State *s, int i, int slot, const torch::Tensor &vals, const torch::Tensor &idx,
               loki_backend_out *out)
{
    Text t = {s->text.data(), 0, s->text.size()};
    const Source *src = &s->src[(size_t)slot];
    t.add("{");
    if (src->has_box)
        t.add("\"box\":[%.1f,%.1f,%.1f,%.1f],", src->box[0], src->box[1], src->box[2], src->box[3]);
    t.add("\"top\":[");
    auto v = vals[slot];
    auto k = idx[slot];
    for (int64_t j = 0; j < v.size(0); j++) {
        int cls = (int)k[j].item<int64_t>();
        t.add("%s{\"class\":%d", j ? "," : "", cls);
        label(s, &t, cls);
        t.add(",\"score\":%.4g}", v[j].item<float>());
    }
    t.add("]}");
    emit_text(out, i, t);
}

void post_detect(State *s, int i, int slot, const std::vector<torch::Tensor> &o,
                 loki_backend_out *out)
{
    const bool coded = o.size() == 3;
    const int64_t A = o[0].size(1), C = o[1].size(2);
    const float *boxes = o[0].data_ptr<float>() + slot * A * 4;
    const float *scores = o[1].data_ptr<float>() + slot * A * C;
    const float *anchors = coded ? o[2].data_ptr<float>() : nullptr;
    int n = 0;
    for (int64_t a = 0; a < A; a++)
        for (int64_t c = 0; c < C; c++) {
            float sc = scores[a * C + c];
            if (c == s->background || !(sc > s->threshold) || n == s->max_candidates)
                continue;
            loki_det *d = &s->dets[(size_t)n++];
            if (coded)
                loki_box_decode(boxes + a * 4, anchors + a * 4, s->box_weights, d->box);
            else
                memcpy(d->box, boxes + a * 4, sizeof(d->box));
            d->score = sc;
            d->cls = (int)c;
        }
    int kept = loki_nms(s->dets.data(), n, s->nms_iou, s->max_boxes);
    const Source *src = &s->src[(size_t)slot];
    const loki_image_view *im = &src->view;
    Text t = {s->text.data(), 0, s->text.size()};
    t.add("{\"image\":[%d,%d],\"boxes\":[", im->w, im->h);
    bool failed = false;
    for (int k = 0; k < kept; k++) {
        loki_det *d = &s->dets[(size_t)k];
        /* model pixels to the source's, clipped to it */
        float b[4] = {d->box[0] * src->sx, d->box[1] * src->sy, d->box[2] * src->sx,
                      d->box[3] * src->sy};
        for (int j = 0; j < 4; j++)
            b[j] = std::min(std::max(b[j], 0.f), (float)(j % 2 ? im->h : im->w));
        t.add("%s{\"box\":[%.1f,%.1f,%.1f,%.1f],\"score\":%.4g,\"class\":%d", k ? "," : "", b[0],
              b[1], b[2], b[3], d->score, d->cls);
        label(s, &t, d->cls);
        t.add(",\"children\":[");
        int sent = 0;
        for (int c = 0; c < s->n_children && !failed; c++) {
            const CropSpec &cs = s->crops[(size_t)c];
            bool want = cs.classes.empty();
            for (int x : cs.classes)
                want = want || x == d->cls;
            if (!want)
                continue;
            size_t data = (size_t)im->c * (size_t)cs.h * (size_t)cs.w * loki_dtype_size(im->dtype);
            size_t hdr = loki_tensor_header_len(im->dtype, 3, true);
            uint8_t *p = (uint8_t *)out->child(out, i, c, (uint32_t)(hdr + data));
            if (!p) {
                failed = true; /* over max_output_bytes: the query has failed already */
                break;
            }
            int64_t shape[3] = {im->c, cs.h, cs.w};
            loki_tensor_write_header(p, im->dtype, 3, shape, data, b);
            loki_resize_out how = {im->dtype, nullptr, nullptr};
            loki_image_resize(im, b[0], b[1], b[2], b[3], cs.h, cs.w, &how, p + hdr);
            t.add("%s", sent++ ? "," : "");
            t.str(s->child_names[(size_t)c]);
        }
        t.add("]}");
    }
    t.add("]}");
    if (!failed)
        emit_text(out, i, t);
}

int torch_infer_impl(State *s, const loki_backend_query *q, int n, loki_backend_out *out)
{
    int k = 0;
    std::string why;
    for (int i = 0; i < n; i++) {
        s->slots[(size_t)i] = -1;
        if (!fill(s, k, &q[i], &why)) {
            out->fail(out, i, -EINVAL, why.c_str());
            continue;
        }
        if (s->post == Post::Detect && !s->src[(size_t)k].view.data) {
            out->fail(out, i, -EINVAL, "detect_crops: a uint8 or float32 image input expected");
            continue;
        }
        s->slots[(size_t)i] = k++;
    }
    if (!k)
        return 0;
    std::vector<torch::Tensor> o;
    torch::Tensor vals, idx;
    try {
        c10::InferenceMode guard;
        std::vector<int64_t> dims{k};
        dims.insert(dims.end(), s->shape.begin(), s->shape.end());
        auto x = torch::from_blob(s->staging.data(), dims,
                                  torch::TensorOptions().dtype(scalar_of(s->in_dtype)));
        if (s->device != torch::kCPU)
            x = x.to(s->device);
        o = outputs_of(s->module.forward({x}));
        std::string bad = check_outputs(s, o, k);
        if (!bad.empty())
            throw std::runtime_error(bad);
        if (s->post == Post::Topk) {
            auto p = o[0].to(torch::kFloat32);
            if (s->softmax)
                p = torch::softmax(p, 1);
            auto tk = p.topk(std::min<int64_t>(s->topk, p.size(1)), 1);
            vals = std::get<0>(tk).contiguous();
            idx = std::get<1>(tk).contiguous();
        } else if (s->post == Post::Detect) {
            for (auto &t : o)
                t = t.to(torch::kFloat32).contiguous();
            if (o.size() == 3)
                o[1] = torch::softmax(o[1], 2).contiguous();
        }
    } catch (const std::exception &e) {
        std::string msg = "the model failed: " + short_what(e);
        for (int i = 0; i < n; i++)
            if (s->slots[(size_t)i] >= 0)
                out->fail(out, i, -EIO, msg.c_str());
        return 0;
    }
    for (int i = 0; i < n; i++) {
        int slot = s->slots[(size_t)i];
        if (slot < 0)
            continue;
        if (s->post == Post::None)
            post_none(s, i, slot, o[0], out);
        else if (s->post == Post::Topk)
            post_topk(s, i, slot, vals, idx, out);
        else
            post_detect(s, i, slot, o, out);
    }
    return 0;
}

/* ---- the C ABI ------------------------------------------------------------------------------- */

int torch_init(const loki_backend_config *cfg, void **state)
{
    try {
        return torch_init_impl(cfg, state);
    } catch (const std::bad_alloc &) {
        return -ENOMEM;
    } catch (const std::exception &e) {
        fprintf(stderr, "loki torchscript: variant %s: %s\n", cfg->variant, short_what(e).c_str());
        return -EINVAL;
    }
}

int torch_infer(void *state, const loki_backend_query *q, int n, loki_backend_out *out)
{
    try {
        return torch_infer_impl(static_cast<State *>(state), q, n, out);
    } catch (const std::bad_alloc &) {
        return -ENOMEM;
    } catch (...) {
        return -EIO;
    }
}

void torch_fini(void *state)
{
    delete static_cast<State *>(state);
}

const loki_backend_v2 ops = {
    LOKI_BACKEND_ABI_VERSION, "torchscript", torch_init, torch_infer, torch_fini,
};

} // namespace

const struct loki_backend_v2 *loki_backend_v2_get(void)
{
    return &ops;
}
