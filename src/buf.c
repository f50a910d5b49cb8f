/* buf: chunked byte queue; see buf.h. */
#include "buf.h"

#include <stdlib.h>
#include <string.h>

#include <mbedtls/platform_util.h>

/* Chunks freed by one queue are reused by the next that needs one: busy
 * tunnels otherwise allocate and free 64 KiB chunks at every write, and
 * the allocator gives the pages back to the kernel and faults them in
 * again each time (a fifth of the time with 100 streams). The pool is
 * small and bounded, so that memory still returns to its idle level. */
#define POOL_MAX_LARGE 32 /* 2 MiB */
#define POOL_MAX_SMALL 32 /* 512 KiB */

static struct pool {
	struct bufq_chunk *free;
	size_t count, max;
} pools[2] = {{NULL, 0, POOL_MAX_SMALL}, {NULL, 0, POOL_MAX_LARGE}};

static struct pool *pool_for(size_t cap)
{
	return &pools[cap == BUFQ_CHUNK ? 1 : 0];
}

static struct bufq_chunk *chunk_get(size_t cap)
{
	struct pool *p = pool_for(cap);
	struct bufq_chunk *c = p->free;
	if (c != NULL) {
		p->free = c->next;
		p->count--;
		return c;
	}
	c = malloc(sizeof(*c) + cap);
	if (c != NULL) {
		c->cap = cap;
		c->secret = false;
	}
	return c;
}

static void chunk_put(struct bufq_chunk *c)
{
	/* A chunk that held a credential is wiped before anyone else gets it,
	 * or the allocator does. */
	if (c->secret) {
		mbedtls_platform_zeroize(c->data, c->end);
		c->secret = false;
	}
	struct pool *p = pool_for(c->cap);
	if (p->count >= p->max) {
		free(c);
		return;
	}
	c->next = p->free;
	p->free = c;
	p->count++;
}

void bufq_pool_drain(void)
{
	for (size_t i = 0; i < 2; i++) {
		while (pools[i].free != NULL) {
			struct bufq_chunk *c = pools[i].free;
			pools[i].free = c->next;
			free(c);
		}
		pools[i].count = 0;
	}
}

void bufq_init(struct bufq *q)
{
	q->head = q->tail = NULL;
	q->len = 0;
}

void bufq_finish(struct bufq *q)
{
	struct bufq_chunk *c = q->head;
	while (c != NULL) {
		struct bufq_chunk *next = c->next;
		chunk_put(c);
		c = next;
	}
	bufq_init(q);
}

/* Copies n bytes XORed with the 4-byte key, starting at key position
 * `phase`; eight bytes at a time where it can. */
static void copy_masked(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t key[4], size_t phase)
{
	uint8_t rot[8];
	for (size_t i = 0; i < 8; i++)
		rot[i] = key[(phase + i) & 3];
	uint64_t k8;
	memcpy(&k8, rot, 8);
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		uint64_t v;
		memcpy(&v, src + i, 8);
		v ^= k8;
		memcpy(dst + i, &v, 8);
	}
	for (; i < n; i++)
		dst[i] = src[i] ^ rot[i & 7];
}

static int append(struct bufq *q, const void *data, size_t len, const uint8_t *key, bool secret)
{
	const uint8_t *p = data;
	size_t done = 0;
	while (len > 0) {
		struct bufq_chunk *t = q->tail;
		if (t == NULL || t->end == t->cap) {
			/* Small first chunks keep a quiet tunnel small; a busy
			 * one gets full-size chunks. */
			size_t cap = q->len + len < BUFQ_CHUNK / 4 ? BUFQ_CHUNK / 4 : BUFQ_CHUNK;
			struct bufq_chunk *c = chunk_get(cap);
			if (c == NULL)
				return -1;
			c->next = NULL;
			c->start = c->end = 0;
			if (t == NULL)
				q->head = c;
			else
				t->next = c;
			q->tail = t = c;
		}
		size_t n = t->cap - t->end;
		if (n > len)
			n = len;
		if (key != NULL)
			copy_masked(t->data + t->end, p, n, key, done);
		else
			memcpy(t->data + t->end, p, n);
		t->secret = t->secret || secret;
		t->end += n;
		q->len += n;
		p += n;
		done += n;
		len -= n;
	}
	return 0;
}

int bufq_append(struct bufq *q, const void *data, size_t len)
{
	return append(q, data, len, NULL, false);
}

int bufq_append_secret(struct bufq *q, const void *data, size_t len)
{
	return append(q, data, len, NULL, true);
}

int bufq_append_masked(struct bufq *q, const void *data, size_t len, const uint8_t key[4])
{
	return append(q, data, len, key, false);
}

size_t bufq_peek(const struct bufq *q, size_t skip, struct bufq_view *views, size_t max)
{
	size_t n = 0;
	for (const struct bufq_chunk *c = q->head; c != NULL && n < max; c = c->next) {
		size_t avail = c->end - c->start;
		if (skip >= avail) {
			skip -= avail;
			continue;
		}
		views[n].base = c->data + c->start + skip;
		views[n].len = avail - skip;
		skip = 0;
		n++;
	}
	return n;
}

void bufq_consume(struct bufq *q, size_t len)
{
	while (len > 0 && q->head != NULL) {
		struct bufq_chunk *c = q->head;
		size_t avail = c->end - c->start;
		size_t n = len < avail ? len : avail;
		c->start += n;
		q->len -= n;
		len -= n;
		if (c->start == c->end) {
			q->head = c->next;
			if (q->head == NULL)
				q->tail = NULL;
			chunk_put(c);
		}
	}
}
