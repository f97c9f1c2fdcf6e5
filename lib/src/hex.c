/* Lower-case hexadecimal: one encoder for every id the services print as hex. */
#include "meseta/hex.h"

char *ms_hex_encode(const void *data, size_t len, char *out) {
  static const char digits[] = "0123456789abcdef";
  const unsigned char *p = data;
  for (size_t i = 0; i < len; i++) {
    out[2 * i] = digits[p[i] >> 4];
    out[2 * i + 1] = digits[p[i] & 0xf];
  }
  out[2 * len] = '\0';
  return out;
}
