/* writer: the outgoing side of one libuv stream: a bufq of bytes waiting to
 * be written, with at most one uv_write in flight. Bytes appended while a
 * write is in flight go out together in the next one, which gathers small
 * pieces (frame headers, payloads) into few system calls.
 *
 * Ownership: embedded in its owner; the stream is the owner's. The bytes
 * handed to uv_write stay in the bufq until the write callback, which is why
 * writer_finish may only run once the stream's close callback has run. */
#ifndef OTOROSHICTL_WRITER_H
#define OTOROSHICTL_WRITER_H

#include <stdbool.h>
#include <uv.h>

#include "buf.h"

struct writer;
/* Called after a write completes (status 0) or fails (negative uv error). */
typedef void (*writer_done_cb)(struct writer *w, int status);

struct writer {
	uv_stream_t *stream;
	struct bufq q;
	size_t inflight; /* bytes of q handed to uv_write, not yet confirmed */
	uint64_t written; /* bytes confirmed written, ever */
	uv_write_t req;
	writer_done_cb done;
	int error; /* the first write error, sticky */
};

void writer_init(struct writer *w, uv_stream_t *stream, writer_done_cb done);
void writer_finish(struct writer *w);
/* Copies len bytes to the end of the queue. Returns 0 or UV_ENOMEM. */
int writer_push(struct writer *w, const void *data, size_t len);
/* The same for bytes that carry a credential: wiped once written. */
int writer_push_secret(struct writer *w, const void *data, size_t len);
/* The same, masking the bytes with a WebSocket key on the way. */
int writer_push_masked(struct writer *w, const void *data, size_t len, const uint8_t key[4]);
/* Starts a write of everything queued when none is in flight. Returns 0 or
 * a negative uv error (also kept in w->error). */
int writer_flush(struct writer *w);
/* Bytes queued or in flight. */
static inline size_t writer_pending(const struct writer *w)
{
	return w->q.len;
}
/* Bytes the kernel took, ever, counting a write in flight as far as it
 * went: it moves while a slow peer drains a long write. */
uint64_t writer_progress(const struct writer *w);


/* The loop's one read buffer, as a libuv alloc callback. Every read
 * callback consumes its bytes before returning (they are framed, copied to
 * a queue or decrypted at once), so all streams share it and an idle
 * connection holds no read buffer. */
#define WRITER_READ_BUFFER 65536
void writer_alloc_read_buffer(uv_handle_t *handle, size_t suggested, uv_buf_t *buf);

#endif
