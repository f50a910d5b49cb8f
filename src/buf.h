/* buf: a byte queue made of heap chunks, taken as data arrives and given
 * back as soon as they have been written, to a small pool for the next
 * queue or to the allocator, so that an idle queue holds no memory. It
 * gathers many small appends (frame headers, masked payload pieces) into
 * few large writes.
 *
 * Ownership: the queue owns its chunks. bufq_peek hands out views of the
 * chunks that stay valid until bufq_consume or bufq_finish. */
#ifndef OTOROSHICTL_BUF_H
#define OTOROSHICTL_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BUFQ_CHUNK 65536

struct bufq_chunk {
	struct bufq_chunk *next;
	size_t start; /* first byte not yet consumed */
	size_t end;   /* one past the last byte appended */
	size_t cap;
	bool secret;  /* held a credential: wiped when released */
	uint8_t data[];
};

struct bufq {
	struct bufq_chunk *head, *tail;
	size_t len; /* bytes appended and not yet consumed */
};

void bufq_init(struct bufq *q);
/* Frees the chunks kept for reuse (at exit, so that leak checkers see a
 * clean heap). */
void bufq_pool_drain(void);
void bufq_finish(struct bufq *q);
/* Copies len bytes to the end. Returns 0, or -1 when memory runs out. */
int bufq_append(struct bufq *q, const void *data, size_t len);
/* The same for bytes that carry a credential (a request head): the chunks
 * that held them are wiped when they are released, to the pool or to the
 * allocator. */
int bufq_append_secret(struct bufq *q, const void *data, size_t len);
/* The same, XORing the bytes with a WebSocket masking key as they are
 * copied (RFC 6455 section 5.3): byte i gets key[i % 4]. Masking during
 * the copy the data needs anyway costs no extra pass. */
int bufq_append_masked(struct bufq *q, const void *data, size_t len, const uint8_t key[4]);
/* Describes up to max contiguous pieces from the front, starting `skip`
 * bytes in (skip lets a caller look past bytes already handed to the
 * kernel). Returns the number of pieces filled. */
struct bufq_view {
	const uint8_t *base;
	size_t len;
};
size_t bufq_peek(const struct bufq *q, size_t skip, struct bufq_view *views, size_t max);
/* Drops len bytes from the front, freeing emptied chunks. */
void bufq_consume(struct bufq *q, size_t len);

#endif
