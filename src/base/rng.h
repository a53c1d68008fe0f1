/* Random numbers: a counter-based hash (splitmix64 finaliser) and a small stateful generator on it.
 * Counter-based so that a value depends only on (seed, counters), never on thread scheduling. */
#ifndef KILN_BASE_RNG_H
#define KILN_BASE_RNG_H

#include <stdint.h>

static inline uint64_t kiln_mix64(uint64_t z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Hash of (seed, a, b): a pure function, for counter-based sampling. */
static inline uint64_t kiln_hash3(uint64_t seed, uint64_t a, uint64_t b) {
    return kiln_mix64(kiln_mix64(kiln_mix64(seed) ^ a) ^ b);
}

typedef struct {
    uint64_t state;
} kiln_rng;

static inline void kiln_rng_seed(kiln_rng *r, uint64_t seed) { r->state = seed; }
static inline uint64_t kiln_rng_u64(kiln_rng *r) { return kiln_mix64(r->state++); }
/* Uniform in [0, 1) with 24 random bits (exactly representable as float). */
static inline float kiln_rng_f32(kiln_rng *r) { return (float)(kiln_rng_u64(r) >> 40) * (1.0f / 16777216.0f); }
/* Uniform in [0, 1) with 53 random bits. */
static inline double kiln_rng_f64(kiln_rng *r) { return (double)(kiln_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0); }
/* Uniform integer in [0, n), unbiased (Lemire's method). */
static inline uint64_t kiln_rng_below(kiln_rng *r, uint64_t n) {
    for (;;) {
        uint64_t x = kiln_rng_u64(r);
        __uint128_t m = (__uint128_t)x * n;
        uint64_t lo = (uint64_t)m;
        if (lo >= n || lo >= (uint64_t)(-n) % n) return (uint64_t)(m >> 64);
    }
}

#endif
