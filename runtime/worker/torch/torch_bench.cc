/* SPDX-License-Identifier: Apache-2.0 */
/*
 * loki_torch_bench: times one TorchScript model two ways in the same run, batch size by batch
 * size: a plain libtorch loop (forward of a ready batch tensor, nothing else), and the
 * torchscript plugin's infer (dlopen'ed as a worker does, the same model and args, real
 * payloads: decode, resize, batch, forward, postprocess, emit into a heap sink). With --socket
 * it also drives a running lokid in a closed loop (--clients requests in flight) and reports
 * frames/s and latency against the plain loop's frames/s at --batch. Prints one line per
 * metric, "name unit median p99 n", and the plugin's medians as a topology latency_ms row.
 * It is our own timing tool (the latency tables of examples/vision were measured with it).
 */
#include <torch/script.h>

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <dlfcn.h>
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "loki/backend.h"
/* a C header without C++ guards, whose function loki_client_stats() shadows the struct of
 * that name in C++ */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wshadow"
extern "C" {
#include "loki/client.h"
}
#pragma GCC diagnostic pop

namespace
{

double now_ms()
{
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* CPU time of the calling thread: at 1 intra-op thread all the model's work runs on it, and a
 * busy machine (other processes on the same cores) inflates it far less than wall time. */
double cpu_ms()
{
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

struct Stats {
    double median, p99;
    size_t n;
};

Stats stats(std::vector<double> v)
{
    std::sort(v.begin(), v.end());
    if (v.empty())
        return {0, 0, 0};
    return {v[v.size() / 2], v[std::min(v.size() - 1, (size_t)(0.99 * (double)v.size()))],
            v.size()};
}

void line(const std::string &name, const char *unit, const Stats &s)
{
    printf("%s %s %.3f %.3f %zu\n", name.c_str(), unit, s.median, s.p99, s.n);
    fflush(stdout);
}

/* ---- a heap sink for the plugin's results ---------------------------------------------- */

struct Sink {
    loki_backend_out out;
    std::vector<std::vector<uint8_t>> blocks;
    std::vector<bool> failed;
    std::vector<std::string> msg;
    size_t children = 0;
};

void *sink_output(loki_backend_out *o, int i, uint32_t len)
{
    Sink *s = (Sink *)o;
    s->blocks.emplace_back(len);
    (void)i;
    return s->blocks.back().data();
}

void *sink_child(loki_backend_out *o, int i, int c, uint32_t len)
{
    Sink *s = (Sink *)o;
    s->children++;
    (void)c;
    return sink_output(o, i, len);
}

void sink_shrink(loki_backend_out *, void *, uint32_t)
{
}

void sink_fail(loki_backend_out *o, int i, int32_t, const char *msg)
{
    Sink *s = (Sink *)o;
    s->failed[(size_t)i] = true;
    s->msg[(size_t)i] = msg ? msg : "";
}

std::vector<uint8_t> read_file(const char *path)
{
    std::ifstream f(path, std::ios::binary);
    if (!f) {
        fprintf(stderr, "loki_torch_bench: cannot read %s\n", path);
        exit(1);
    }
    return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

/* ---- lokid, closed loop ------------------------------------------------------------------ */

struct Loop {
    loki_client *c;
    const char *pipeline;
    const std::vector<uint8_t> *payload;
    double until;
    std::atomic<int> inflight{0}, errors{0}, overloaded{0};
    std::atomic<long> done{0};
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    std::vector<double> lat;
    std::string last_error;
};

struct Req {
    Loop *l;
    double t0;
};

void submit(Loop *l);

void on_reply(void *ctx, const loki_reply *r)
{
    Req *q = (Req *)ctx;
    Loop *l = q->l;
    double ms = now_ms() - q->t0;
    delete q;
    pthread_mutex_lock(&l->mu);
    bool overloaded = r->status == LOKI_STATUS_OVERLOADED;
    if (r->status == LOKI_STATUS_OK) {
        l->lat.push_back(ms);
        l->done++;
    } else if (overloaded) {
        l->overloaded++;
    } else {
        l->errors++;
        l->last_error = std::string(loki_status_name(r->status)) + ": " +
                        std::string((const char *)r->error.ptr, r->error.len);
    }
    pthread_mutex_unlock(&l->mu);
    if (overloaded) /* lokid's admission control: back off as its retry_after_ms says */
        usleep((useconds_t)(r->has_retry_after ? r->retry_after_ms * 1e3 : 10000));
    if (now_ms() < l->until)
        submit(l);
    else
        l->inflight--;
}

void submit(Loop *l)
{
    loki_client_req req = {};
    req.pipeline = l->pipeline;
    req.payload = l->payload->data();
    req.payload_len = (uint32_t)l->payload->size();
    req.timeout_ms = 60000;
    Req *q = new Req{l, now_ms()};
    if (loki_client_submit(l->c, &req, on_reply, q, nullptr)) {
        delete q;
        l->inflight--;
    }
}

void usage()
{
    fprintf(
        stderr,
        "usage: loki_torch_bench --plugin SO --payload FILE --arg model=M --arg shape=3x224x224 "
        "[--arg k=v]...\n"
        "       [--batches 1,2,4,8] [--reps N] [--threads N]\n"
        "       [--socket S --pipeline P [--clients N] [--seconds S] [--batch B]]\n");
    exit(2);
}

} // namespace

int main(int argc, char **argv)
{
    const char *plugin = nullptr, *payload_path = nullptr, *sock = nullptr, *pipeline = nullptr;
    std::vector<std::string> keys, vals;
    std::vector<int> batches{1, 2, 4, 8};
    int reps = 20, threads = 1, clients = 16, e2e_batch = 8;
    double seconds = 20;
    static const option opts[] = {
        {"plugin", 1, 0, 'p'},  {"payload", 1, 0, 'f'},  {"arg", 1, 0, 'a'},
        {"batches", 1, 0, 'b'}, {"reps", 1, 0, 'r'},     {"threads", 1, 0, 't'},
        {"socket", 1, 0, 's'},  {"pipeline", 1, 0, 'P'}, {"clients", 1, 0, 'c'},
        {"seconds", 1, 0, 'S'}, {"batch", 1, 0, 'B'},    {0, 0, 0, 0}};
    for (int o; (o = getopt_long(argc, argv, "", opts, nullptr)) != -1;) {
        switch (o) {
        case 'p':
            plugin = optarg;
            break;
        case 'f':
            payload_path = optarg;
            break;
        case 'a': {
            const char *eq = strchr(optarg, '=');
            if (!eq)
                usage();
            keys.emplace_back(optarg, eq - optarg);
            vals.emplace_back(eq + 1);
            break;
        }
        case 'b': {
            batches.clear();
            for (char *s = optarg; *s;) {
                batches.push_back(atoi(s));
                s += strcspn(s, ",");
                s += *s == ',';
            }
            break;
        }
        case 'r':
            reps = atoi(optarg);
            break;
        case 't':
            threads = atoi(optarg);
            break;
        case 's':
            sock = optarg;
            break;
        case 'P':
            pipeline = optarg;
            break;
        case 'c':
            clients = atoi(optarg);
            break;
        case 'S':
            seconds = atof(optarg);
            break;
        case 'B':
            e2e_batch = atoi(optarg);
            break;
        default:
            usage();
        }
    }
    if (!plugin || !payload_path || batches.empty() || reps < 1)
        usage();
    std::vector<uint8_t> payload = read_file(payload_path);
    keys.emplace_back("threads");
    vals.emplace_back(std::to_string(threads));
    std::vector<const char *> k, v;
    std::string model, shape;
    for (size_t i = 0; i < keys.size(); i++) {
        k.push_back(keys[i].c_str());
        v.push_back(vals[i].c_str());
        if (keys[i] == "model")
            model = vals[i];
        if (keys[i] == "shape")
            shape = vals[i];
    }
    if (model.empty() || shape.empty())
        usage();
    int max_batch = std::max(*std::max_element(batches.begin(), batches.end()), e2e_batch);

    /* the plugin, as a worker loads it */
    void *h = dlopen(plugin, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fprintf(stderr, "loki_torch_bench: %s\n", dlerror());
        return 1;
    }
    auto get = (loki_backend_v2_get_fn)dlsym(h, "loki_backend_v2_get");
    const loki_backend_v2 *be = get ? get() : nullptr;
    if (!be)
        return 1;
    int batch_row[1] = {max_batch};
    double lat_row[1] = {1};
    const char *child_names[LOKI_MAX_CHILDREN];
    double means[LOKI_MAX_CHILDREN] = {0};
    int dists[LOKI_MAX_CHILDREN] = {0};
    int n_children = 0;
    for (size_t i = 0; i < keys.size() && n_children < LOKI_MAX_CHILDREN; i++)
        if (keys[i].rfind("crop.", 0) == 0)
            child_names[n_children++] = keys[i].c_str() + 5;
    loki_backend_config cfg = {};
    cfg.pipeline = "bench";
    cfg.task = "bench";
    cfg.variant = "bench";
    cfg.max_batch = max_batch;
    cfg.share = 1;
    cfg.gpu = -1;
    cfg.n_batches = 1;
    cfg.batches = batch_row;
    cfg.latency_ms = lat_row;
    cfg.n_children = n_children;
    cfg.fanout_mean = means;
    cfg.fanout_dist = dists;
    cfg.n_args = (int)k.size();
    cfg.arg_keys = k.data();
    cfg.arg_values = v.data();
    cfg.max_output_bytes = 64u << 20;
    cfg.child_tasks = child_names;
    void *state = nullptr;
    double t0 = now_ms();
    if (be->init(&cfg, &state)) {
        fprintf(stderr, "loki_torch_bench: the plugin's init failed\n");
        return 1;
    }
    printf("# plugin init (load + warm-up) %.0f ms; model %s; threads %d\n", now_ms() - t0,
           model.c_str(), threads);

    /* the plain loop: the same file, the same threads */
    at::set_num_threads(threads);
    torch::jit::Module m = torch::jit::load(model);
    m.eval();
    std::vector<int64_t> dims;
    for (char *s = &shape[0]; *s;) {
        dims.push_back(atol(s));
        s += strcspn(s, "x,");
        s += *s != 0;
    }
    std::vector<double> plugin_median;
    std::vector<loki_backend_query> q((size_t)max_batch);
    for (int b : batches) {
        std::vector<int64_t> d{b};
        d.insert(d.end(), dims.begin(), dims.end());
        torch::Tensor x = torch::rand(d);
        std::vector<double> plain, plug, plain_cpu, plug_cpu;
        c10::InferenceMode guard;
        for (int i = 0; i < b; i++)
            q[(size_t)i] = {(uint64_t)i, payload.data(), (uint32_t)payload.size()};
        size_t kids = 0;
        /* alternate the two, so that a change in the machine's load hits both alike */
        for (int r = 0; r < reps + 2; r++) {
            double a = now_ms(), ac = cpu_ms();
            m.forward({x});
            if (r >= 2) {
                plain.push_back(now_ms() - a);
                plain_cpu.push_back(cpu_ms() - ac);
            }
            Sink s;
            s.out = {sink_output, sink_child, sink_shrink, sink_fail};
            s.failed.assign((size_t)b, false);
            s.msg.assign((size_t)b, "");
            s.blocks.reserve(4096);
            a = now_ms(), ac = cpu_ms();
            be->infer(state, q.data(), b, &s.out);
            if (r >= 2) {
                plug.push_back(now_ms() - a);
                plug_cpu.push_back(cpu_ms() - ac);
            }
            if (s.failed[0]) {
                fprintf(stderr, "loki_torch_bench: the plugin failed a query: %s\n",
                        s.msg[0].c_str());
                return 1;
            }
            kids = s.children;
        }
        line("plain_forward_cpu_b" + std::to_string(b), "ms", stats(plain_cpu));
        line("plugin_infer_cpu_b" + std::to_string(b), "ms", stats(plug_cpu));
        Stats sp = stats(plain), sg = stats(plug);
        line("plain_forward_b" + std::to_string(b), "ms", sp);
        line("plugin_infer_b" + std::to_string(b), "ms", sg);
        Stats spc = stats(plain_cpu), sgc = stats(plug_cpu);
        printf("plugin_over_plain_b%d ratio %.3f - - (CPU time; wall %.3f; children per batch "
               "%zu)\n",
               b, sgc.median / spc.median, sg.median / sp.median, kids);
        plugin_median.push_back(sgc.median);
    }
    printf("# latency_ms row for the topology (plugin infer, CPU time medians): batch_sizes: [");
    for (size_t i = 0; i < batches.size(); i++)
        printf("%s%d", i ? ", " : "", batches[i]);
    printf("], latency_ms: [");
    for (size_t i = 0; i < plugin_median.size(); i++)
        printf("%s%.1f", i ? ", " : "", plugin_median[i]);
    printf("]\n");
    be->fini(state);

    if (sock && pipeline) {
        /* the plain loop at the e2e batch: frames/s to compare with lokid's */
        std::vector<int64_t> d{e2e_batch};
        d.insert(d.end(), dims.begin(), dims.end());
        torch::Tensor x = torch::rand(d);
        std::vector<double> plain;
        {
            c10::InferenceMode guard;
            for (int r = 0; r < reps + 2; r++) {
                double a = now_ms();
                m.forward({x});
                if (r >= 2)
                    plain.push_back(now_ms() - a);
            }
        }
        double plain_fps = 1e3 * e2e_batch / stats(plain).median;
        Loop l;
        if (loki_client_connect(sock, nullptr, &l.c)) {
            fprintf(stderr, "loki_torch_bench: cannot connect to %s\n", sock);
            return 1;
        }
        l.pipeline = pipeline;
        l.payload = &payload;
        double start = now_ms();
        l.until = start + seconds * 1e3;
        l.inflight = clients;
        for (int i = 0; i < clients; i++)
            submit(&l);
        while (l.inflight > 0)
            usleep(10000);
        double el = (now_ms() - start) / 1e3;
        pthread_mutex_lock(&l.mu);
        double fps = (double)l.done / el;
        line("lokid_e2e_latency", "ms", stats(l.lat));
        printf("lokid_e2e_throughput frames/s %.1f - %ld (overloaded %d, errors %d%s%s)\n", fps,
               (long)l.done, (int)l.overloaded, (int)l.errors, l.errors ? ", last: " : "",
               l.last_error.c_str());
        printf("plain_loop_b%d_throughput frames/s %.1f - %zu\n", e2e_batch, plain_fps,
               plain.size());
        printf("lokid_overhead_b%d ratio %.3f - - (1 - lokid/plain throughput)\n", e2e_batch,
               1.0 - fps / plain_fps);
        pthread_mutex_unlock(&l.mu);
        loki_client_close(l.c);
    }
    return 0;
}
