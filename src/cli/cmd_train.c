/* kiln train: trains a byte-level transformer on a corpus (kiln corpus), with checkpoints and resume. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/comm.h"
#include "base/error.h"
#include "base/progress.h"
#include "cli/cli.h"
#include "train/blas.h"
#include "train/trainer.h"

static const char *USAGE =
    "usage: kiln train --data CORPUS --out RUN [flags]      start a run in the folder RUN\n"
    "       kiln train --resume RUN [--steps N] [--minutes M]  continue it from its newest checkpoint\n"
    "  model (fixed for the run):\n"
    "    --arch A           gpt2 (LayerNorm, learned positions, GELU) or llama (RMSNorm, RoPE, SwiGLU); default llama\n"
    "    --layers N         transformer blocks (default 4)\n"
    "    --dim N            embedding width (default 256)\n"
    "    --heads N          attention heads (default 4)\n"
    "    --kv-heads N       key/value heads, llama only (default: --heads)\n"
    "    --ffn N            MLP width (default: 4 dim for gpt2, 8/3 dim for llama)\n"
    "    --ctx N            context length in bytes (default 256)\n"
    "  optimisation (fixed for the run):\n"
    "    --batch N          sequences per micro-batch, per process (default 16)\n"
    "    --accum N          micro-batches accumulated per step (default 1)\n"
    "    --lr X             peak learning rate (default 2e-3)\n"
    "    --min-lr X         final learning rate as a fraction of --lr, cosine decay (default 0.1)\n"
    "    --warmup N         steps of linear warmup (default: steps/20, at most 200)\n"
    "    --weight-decay X   AdamW decay of matrices other than embeddings (default 0.1)\n"
    "    --clip X           clip the gradient's global norm to X, 0 for none (default 1.0)\n"
    "    --seed S           initial weights and data order (default 1)\n"
    "  length:\n"
    "    --steps N          optimizer steps (default 1000 unless --minutes)\n"
    "    --minutes M        time budget: a new run fits its steps to it; any run stops when it is spent\n"
    "    --stop-at N        stop after step N with a checkpoint, leaving the schedule as it is (--resume goes on)\n"
    "  outputs:\n"
    "    --log-every N      steps between train lines in RUN/log.jsonl (default 10)\n"
    "    --eval-every N     steps between validation evaluations (default 200)\n"
    "    --eval-bytes SIZE  validation bytes per evaluation, whole files spread over the split, 0 for all\n"
    "                       (default 128K)\n"
    "    --save-every N     steps between checkpoints (default 200)\n"
    "    --keep K           checkpoints kept, 0 for all (default 3)\n"
    "    --threads N        threads (default: all cores)\n"
    "    --progress/--quiet always / never show the progress bar (default: when stderr is a terminal)\n"
    "  Data parallel: mpirun -np P kiln train ... (P processes, each --batch sequences per micro-batch).\n";

/* Flags that define a run and so cannot change on --resume. */
static const char *const FIXED[] = {"--arch", "--layers", "--dim", "--heads", "--kv-heads", "--ffn", "--ctx",
                                    "--batch", "--accum", "--lr", "--min-lr", "--warmup", "--weight-decay",
                                    "--clip", "--seed", "--out"};

static int is_fixed(const char *flag) {
    for (size_t i = 0; i < sizeof FIXED / sizeof FIXED[0]; i++)
        if (!strcmp(flag, FIXED[i])) return 1;
    return 0;
}

static int train(int argc, char **argv) {
    blas_prefer_avx512(argv - 1); /* argv[-1]: the program, as main received it */
    const char *arch = "llama", *resume = NULL, *fixed_flag = NULL, *v;
    /* defaults: a 3.2M-parameter model, which learns more in minutes on a few cores than a larger one */
    long long layers = 4, dim = 256, heads = 4, kv_heads = 0, ffn = 0, ctx = 256, batch = 16, accum = 1, warmup = -1;
    long long seed = 1, threads = 0;
    double lr = 2e-3, min_lr = 0.1, wd = 0.1, clip = 1.0;
    train_opts o = {.keep = -1, .eval_bytes = -1, .progress = KILN_PROGRESS_AUTO};
    long long steps = 0, n;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return fputs(USAGE, stdout), 0;
        if (!strcmp(a, "--progress")) { o.progress = KILN_PROGRESS_ON; continue; }
        if (!strcmp(a, "--quiet")) { o.progress = KILN_PROGRESS_OFF, o.quiet = 1; continue; }
        if (!(v = cli_value(argc, argv, &i))) return 1;
        if (is_fixed(a)) fixed_flag = a;
        if (!strcmp(a, "--data")) o.data = v;
        else if (!strcmp(a, "--out")) o.out = v;
        else if (!strcmp(a, "--resume")) resume = v;
        else if (!strcmp(a, "--arch")) arch = v;
        else if (!strcmp(a, "--layers")) { if (cli_int(a, v, 1, 1024, &layers)) return 1; }
        else if (!strcmp(a, "--dim")) { if (cli_int(a, v, 1, 1 << 16, &dim)) return 1; }
        else if (!strcmp(a, "--heads")) { if (cli_int(a, v, 1, 1024, &heads)) return 1; }
        else if (!strcmp(a, "--kv-heads")) { if (cli_int(a, v, 1, 1024, &kv_heads)) return 1; }
        else if (!strcmp(a, "--ffn")) { if (cli_int(a, v, 1, 1 << 18, &ffn)) return 1; }
        else if (!strcmp(a, "--ctx")) { if (cli_int(a, v, 1, 1 << 16, &ctx)) return 1; }
        else if (!strcmp(a, "--batch")) { if (cli_int(a, v, 1, 1 << 16, &batch)) return 1; }
        else if (!strcmp(a, "--accum")) { if (cli_int(a, v, 1, 1 << 16, &accum)) return 1; }
        else if (!strcmp(a, "--lr")) { if (cli_float(a, v, 1e-9, 10, &lr)) return 1; }
        else if (!strcmp(a, "--min-lr")) { if (cli_float(a, v, 0, 1, &min_lr)) return 1; }
        else if (!strcmp(a, "--warmup")) { if (cli_int(a, v, 0, 1LL << 40, &warmup)) return 1; }
        else if (!strcmp(a, "--weight-decay")) { if (cli_float(a, v, 0, 10, &wd)) return 1; }
        else if (!strcmp(a, "--clip")) { if (cli_float(a, v, 0, 1e9, &clip)) return 1; }
        else if (!strcmp(a, "--seed")) { if (cli_int(a, v, 0, INT64_MAX, &seed)) return 1; }
        else if (!strcmp(a, "--steps")) { if (cli_int(a, v, 1, 1LL << 40, &steps)) return 1; }
        else if (!strcmp(a, "--stop-at")) { if (cli_int(a, v, 1, 1LL << 40, &n)) return 1; o.stop_at = n; }
        else if (!strcmp(a, "--minutes")) { if (cli_float(a, v, 1e-3, 1e7, &o.minutes)) return 1; }
        else if (!strcmp(a, "--log-every")) { if (cli_int(a, v, 1, 1LL << 40, &n)) return 1; o.log_every = n; }
        else if (!strcmp(a, "--eval-every")) { if (cli_int(a, v, 1, 1LL << 40, &n)) return 1; o.eval_every = n; }
        else if (!strcmp(a, "--save-every")) { if (cli_int(a, v, 1, 1LL << 40, &n)) return 1; o.save_every = n; }
        else if (!strcmp(a, "--keep")) { if (cli_int(a, v, 0, 1 << 20, &n)) return 1; o.keep = (int)n; }
        else if (!strcmp(a, "--eval-bytes")) {
            uint64_t size;
            if (cli_size(a, v, &size)) return 1;
            o.eval_bytes = (int64_t)size;
        }
        else if (!strcmp(a, "--threads")) { if (cli_int(a, v, 1, 1024, &threads)) return 1; }
        else return cli_error("train: unknown flag '%s' (see kiln train --help)", a);
    }
    if (resume) {
        if (fixed_flag)
            return cli_error("train: %s cannot change on --resume: the run's settings are in its checkpoints", fixed_flag);
        o.out = resume;
        o.resume = 1;
        o.steps = steps;
    } else {
        if (!o.data) return cli_error("train: --data CORPUS is required (make one with kiln corpus)");
        if (!o.out) return cli_error("train: --out RUN is required: the folder for checkpoints and the log");
        if (!strcmp(arch, "gpt2") && kv_heads && kv_heads != heads)
            return cli_error("train: --kv-heads %lld: gpt2 has one kv head per head; use --arch llama", kv_heads);
        if (train_config_make(&o.model, arch, (int)layers, (int)dim, (int)heads, (int)(kv_heads ? kv_heads : heads),
                              (int)ffn, (int)ctx) < 0)
            return cli_error("train: %s", kiln_errmsg());
        o.h = (train_hparams){.batch = (int)batch, .accum = (int)accum, .ctx = (int)ctx, .warmup = warmup,
                              .lr = (float)lr, .min_lr_ratio = (float)min_lr,
                              .adam = {0.9f, 0.95f, 1e-8f, (float)wd}, .clip = (float)clip, .seed = (uint64_t)seed};
        o.h.steps = steps ? steps : o.minutes > 0 ? 0 : 1000;
        if (o.h.warmup >= 0 && o.h.steps > 0 && o.h.warmup >= o.h.steps)
            return cli_error("train: --warmup %lld must be below --steps %lld", warmup, (long long)o.h.steps);
        if (strlen(o.data) >= sizeof o.h.data) return cli_error("train: --data: path too long");
        snprintf(o.h.data, sizeof o.h.data, "%s", o.data);
        o.h.log_every = o.log_every ? o.log_every : 10;
        o.h.eval_every = o.eval_every ? o.eval_every : 200;
        o.h.save_every = o.save_every ? o.save_every : 200;
        o.h.keep = o.keep >= 0 ? o.keep : 3;
        o.h.eval_bytes = o.eval_bytes >= 0 ? (uint64_t)o.eval_bytes : 128 << 10;
    }
    if (threads) omp_set_num_threads((int)threads);
    if (comm_init() < 0) return cli_error("train: %s", kiln_errmsg());
    if (comm_rank() != 0) o.quiet = 1;
    int rc = kiln_train(&o);
    comm_finalize();
    if (rc < 0) return cli_error("train: %s", kiln_errmsg());
    return rc == 2 ? 130 : 0;
}

KILN_COMMAND("train", "train a byte-level model on a corpus, with checkpoints", train)
