// M is the type float math runs in: double where the device has it (ir::eval computes in
// f64), float otherwise.
#ifdef KILN_FP64
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
typedef double M;
#else
typedef float M;
#endif
static inline M k_clamp(M v, M lo, M hi) { return v < lo ? lo : (v > hi ? hi : v); }
static inline M k_sign(M x) { return x > 0 ? (M)1 : (x < 0 ? (M)-1 : x); }
static inline M k_relu(M x) { return x < 0 ? (M)0 : x; }
static inline M k_sigmoid(M x) { if (x >= 0) return 1 / (1 + exp(-x)); M e = exp(x); return e / (1 + e); }
static inline M k_softplus(M x) { return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)); }
static inline M k_pymod(M a, M b) {
  M m = fmod(a, b);
  if (b == 0 || isnan(m)) return m;
  if (m == 0) return copysign((M)0, b);
  return ((b < 0) != (m < 0)) ? m + b : m;
}
static inline M k_minmax(M a, M c, int max) { if (a != a) return a; if (c != c || (c > a) == max) return c; return a; }
static inline long k_imod(long a, long c) { if (c == 0) return 0; long r = a % c; return (r != 0 && ((r < 0) != (c < 0))) ? r + c : r; }
static inline long k_ipow(long a, long e) {
  if (e < 0) return a == 1 ? 1 : (a == -1 ? ((e % 2) ? -1 : 1) : 0);
  long acc = 1; while (e > 0) { if (e & 1) acc *= a; a *= a; e >>= 1; } return acc;
}
