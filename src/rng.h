/* rng: the process's random source (mbedTLS CTR-DRBG seeded from the
 * system's entropy), for Sec-WebSocket-Key values and frame masks. One
 * instance per process, used from the loop thread only. */
#ifndef OTOROSHICTL_RNG_H
#define OTOROSHICTL_RNG_H

#include <stddef.h>
#include <stdint.h>

/* Seeds the generator. Returns 0, or a negative mbedTLS error. */
int rng_init(void);
/* Fills buf with len random bytes. Returns 0, or a negative mbedTLS error. */
int rng_bytes(uint8_t *buf, size_t len);
void rng_finish(void);
/* The generator, for mbedTLS functions that take f_rng/p_rng. */
int rng_mbedtls(void *ctx, unsigned char *buf, size_t len);

#endif
