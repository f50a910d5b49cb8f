/* load: the benchmark's client side, in C so that it is never the bottleneck.
 *
 * Connects to 127.0.0.1:PORT (a tunnel, a socat, or the gateway's bare
 * service) and drives one test; the service's behaviour (sink, source, echo)
 * is the one bench/gateway.c describes. Prints one line "result k=v ..." on
 * stdout; failures are counted, and the first one is described in err=.
 *
 *   load PORT up BYTES           one stream to a sink: send, half-close, read the count
 *   load PORT down BYTES         one stream from a source: ask for BYTES, read them
 *   load PORT both BYTES         one stream to an echo: send and read at once
 *   load PORT rtt COUNT SIZE     COUNT request/response pairs of SIZE bytes (echo)
 *   load PORT setup COUNT CONC   connect, one byte echoed, close; CONC at a time
 *   load PORT idle COUNT CONC    open COUNT connections, each with one byte echoed,
 *                                print "READY ...", hold them until stdin closes
 *   load PORT streams N SECS up|down   N streams at once, to a counting sink
 *                                or from a source; once all of them move data,
 *                                and 0.3 s more, each one's delivered bytes are
 *                                counted for SECS seconds ("WINDOW start" and
 *                                "WINDOW end" are printed as it begins and ends)
 *
 * Times are from CLOCK_MONOTONIC. Throughput tests use 1 MiB buffers. */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF_SIZE (1024 * 1024)
#define GLOBAL_TIMEOUT 120.0
#define CONN_TIMEOUT 20.0

enum mode { UP, DOWN, BOTH, SETUP, IDLE };
enum state { CONNECTING, RUNNING, WAIT_COUNT, DONE, FAILED };

struct cx {
	int fd;
	enum state state;
	uint64_t sent, rcvd, count;
	uint64_t base;  /* streams: bytes delivered before the window */
	uint64_t acked; /* streams up: the sink's latest count */
	unsigned req_sent, cnt_got;
	uint8_t req[8], cnt[8];
	double t0, t1;
	uint32_t events;
};

static uint8_t sbuf[BUF_SIZE];
static uint8_t rbuf[BUF_SIZE];
static int port;
static int epfd;
static enum mode mode;
static uint64_t target;   /* bytes per stream (UP, DOWN, BOTH) */
static bool timed;        /* streams: run until the deadline */
static bool stopping;     /* streams: the deadline has passed */
static double window_start; /* streams: when the measured window began */
#define SETTLE 0.3        /* streams: run this long once all are flowing */
static int failures;
static char first_err[160];

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void fail(struct cx *c, const char *what, int err)
{
	if (c->state == FAILED || c->state == DONE)
		return;
	if (first_err[0] == '\0') {
		if (err)
			snprintf(first_err, sizeof(first_err), "%s:%s", what, strerror(err));
		else
			snprintf(first_err, sizeof(first_err), "%s", what);
		for (char *p = first_err; *p; p++)
			if (*p == ' ')
				*p = '_';
	}
	failures++;
	c->state = FAILED;
	if (c->fd >= 0) {
		close(c->fd);
		c->fd = -1;
	}
}

static void set_events(struct cx *c, uint32_t ev)
{
	if (c->fd < 0 || ev == c->events)
		return;
	struct epoll_event e = {.events = ev, .data.ptr = c};
	epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &e);
	c->events = ev;
}

static bool cx_open(struct cx *c)
{
	memset(c, 0, sizeof(*c));
	c->t0 = now();
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		c->state = CONNECTING;
		fail(c, "socket", errno);
		return false;
	}
	int one = 1;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(c->fd, (struct sockaddr *)&a, sizeof(a)) != 0 && errno != EINPROGRESS) {
		c->state = CONNECTING;
		fail(c, "connect", errno);
		return false;
	}
	c->state = CONNECTING;
	c->events = EPOLLOUT;
	struct epoll_event e = {.events = EPOLLOUT, .data.ptr = c};
	epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &e);
	return true;
}

static void finish(struct cx *c, bool close_it)
{
	c->t1 = now();
	c->state = DONE;
	if (close_it) {
		close(c->fd);
		c->fd = -1;
	} else {
		/* Held open (idle): out of the poll set, so that a hang-up
		 * cannot wake the loop over and over. */
		epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
		c->events = 0;
	}
}

static void on_connected(struct cx *c)
{
	int err = 0;
	socklen_t l = sizeof(err);
	getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
	if (err != 0) {
		fail(c, "connect", err);
		return;
	}
	c->state = RUNNING;
	if (mode == DOWN) {
		uint64_t v = timed ? (UINT64_C(1) << 62) : target;
		for (int i = 0; i < 8; i++)
			c->req[i] = (uint8_t)(v >> (8 * i));
	}
	set_events(c, (mode == UP && !timed) || mode == DOWN ? EPOLLOUT : EPOLLIN | EPOLLOUT);
}

static bool send_more(struct cx *c)
{
	for (int turn = 0;; turn++) {
		if (timed && turn == 1)
			return false;
		size_t want;
		const uint8_t *p = sbuf;
		if (mode == DOWN) {
			p = c->req + c->req_sent;
			want = 8 - c->req_sent;
		} else if (mode == SETUP || mode == IDLE) {
			want = c->sent == 0 ? 1 : 0;
		} else if (timed) {
			want = stopping ? 0 : BUF_SIZE;
		} else {
			uint64_t left = target - c->sent;
			want = left < BUF_SIZE ? (size_t)left : BUF_SIZE;
		}
		if (want == 0)
			return true;
		ssize_t n = send(c->fd, p, want, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return false;
			fail(c, "send", errno);
			return false;
		}
		if (mode == DOWN)
			c->req_sent += (unsigned)n;
		else
			c->sent += (uint64_t)n;
	}
}

static void on_writable(struct cx *c)
{
	if (!send_more(c) || c->state != RUNNING)
		return;
	/* Everything this stream has to send is out. */
	if (mode == UP) {
		shutdown(c->fd, SHUT_WR);
		c->state = WAIT_COUNT;
		set_events(c, EPOLLIN);
	} else {
		set_events(c, EPOLLIN);
	}
}

static void on_readable(struct cx *c)
{
	for (int i = 0; i < (timed ? 1 : 8) && (c->state == RUNNING || c->state == WAIT_COUNT); i++) {
		ssize_t n;
		if (c->state == WAIT_COUNT)
			n = recv(c->fd, c->cnt + c->cnt_got, 8 - c->cnt_got, 0);
		else
			n = recv(c->fd, rbuf, BUF_SIZE, 0);
		if (n < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				fail(c, "recv", errno);
			return;
		}
		if (n == 0) {
			fail(c, c->state == WAIT_COUNT ? "closed_before_the_count" : "closed_by_the_peer", 0);
			return;
		}
		if (c->state == WAIT_COUNT) {
			c->cnt_got += (unsigned)n;
			if (c->cnt_got == 8) {
				for (int k = 7; k >= 0; k--)
					c->count = (c->count << 8) | c->cnt[k];
				if (c->count != c->sent) {
					char m[96];
					snprintf(m, sizeof(m), "sink_counted_%llu_of_%llu", (unsigned long long)c->count,
						 (unsigned long long)c->sent);
					fail(c, m, 0);
					return;
				}
				finish(c, true);
			}
			continue;
		}
		if (mode == UP && timed) {
			/* The counting sink's reports, 8 bytes each. */
			for (ssize_t j = 0; j < n; j++) {
				c->cnt[c->cnt_got++] = rbuf[j];
				if (c->cnt_got == 8) {
					uint64_t v = 0;
					for (int b = 7; b >= 0; b--)
						v = (v << 8) | c->cnt[b];
					c->acked = v;
					c->cnt_got = 0;
				}
			}
			continue;
		}
		c->rcvd += (uint64_t)n;
		if (mode == SETUP || mode == IDLE) {
			finish(c, mode == SETUP);
		} else if (mode == UP) {
			fail(c, "unexpected_data", 0);
		} else if (!timed && c->rcvd >= target) {
			finish(c, true);
		}
	}
}

static void handle(struct cx *c, uint32_t ev)
{
	if (c->state == CONNECTING) {
		on_connected(c);
		if (c->state != RUNNING)
			return;
		ev = EPOLLOUT;
	}
	if ((ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) && c->state != DONE && c->state != FAILED)
		on_readable(c);
	if ((ev & EPOLLOUT) && c->state == RUNNING)
		on_writable(c);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double pct(const double *s, int n, double p)
{
	if (n == 0)
		return 0;
	int i = (int)(p * (n - 1) + 0.5);
	return s[i];
}

static void raise_nofile(void)
{
	struct rlimit r;
	if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
		r.rlim_cur = r.rlim_max;
		setrlimit(RLIMIT_NOFILE, &r);
	}
}

/* True while a set-up or idle connection has not had its byte back. */
static bool in_making(const struct cx *c)
{
	if (c->state == CONNECTING)
		return true;
	return (mode == SETUP || mode == IDLE) && (c->state == RUNNING && c->rcvd == 0);
}

/* True once a stream has moved data (so its set-up is behind it). */
static bool flowing(const struct cx *c)
{
	return c->state == RUNNING && (mode == UP ? c->acked > 0 : c->rcvd > 0);
}

/* Delivered so far: what the counting sink acknowledged, or what arrived. */
static uint64_t delivered(const struct cx *c)
{
	return mode == UP ? c->acked : c->rcvd;
}

/* Streams: starts the window once every stream flows and SETTLE has passed,
 * noting what each one moved before it. Returns the deadline, or 0. */
static double streams_window(struct cx *cs, int n, double secs, double start, double t)
{
	static double ready;
	if (window_start > 0)
		return window_start + secs;
	if (ready == 0) {
		int k = 0;
		for (int i = 0; i < n; i++)
			k += flowing(&cs[i]);
		if (k < n && t - start < CONN_TIMEOUT)
			return 0;
		ready = t;
	}
	if (t - ready < SETTLE)
		return 0;
	window_start = t;
	for (int i = 0; i < n; i++)
		cs[i].base = delivered(&cs[i]);
	printf("WINDOW start\n");
	fflush(stdout);
	return window_start + secs;
}

/* Runs n connections, at most conc of them in the making at once, until
 * each is done or failed (or, when secs > 0, for a window of secs seconds
 * once all of them flow). */
static void run(struct cx *cs, int n, int conc, double secs)
{
	int started = 0, inflight = 0, lowest = 0;
	double start = now(), last_scan = 0;
	struct epoll_event evs[256];
	for (;;) {
		while (started < n && inflight < conc) {
			cx_open(&cs[started]);
			started++;
			inflight++;
		}
		double t = now();
		if (!timed && t - last_scan > 0.5) {
			last_scan = t;
			for (int i = lowest; i < started; i++)
				if (in_making(&cs[i]) && t - cs[i].t0 > CONN_TIMEOUT)
					fail(&cs[i], "timeout", 0);
		}
		inflight = 0;
		bool busy = false;
		while (lowest < started && (cs[lowest].state == DONE || cs[lowest].state == FAILED))
			lowest++;
		for (int i = lowest; i < started; i++) {
			struct cx *c = &cs[i];
			if (c->state == CONNECTING || c->state == RUNNING || c->state == WAIT_COUNT) {
				busy = true;
				inflight += in_making(c);
			}
		}
		if (!busy && started == n)
			return;
		if (inflight < conc && started < n)
			continue;
		if (t - start > GLOBAL_TIMEOUT) {
			for (int i = 0; i < started; i++)
				if (cs[i].state != DONE)
					fail(&cs[i], "global_timeout", 0);
			return;
		}
		double deadline = timed ? streams_window(cs, n, secs, start, t) : 0;
		if (timed && !stopping && deadline > 0 && t >= deadline) {
			stopping = true;
			for (int i = 0; i < n; i++)
				if (cs[i].state == RUNNING)
					finish(&cs[i], true);
			printf("WINDOW end\n");
			fflush(stdout);
			continue;
		}
		int k = epoll_wait(epfd, evs, 256, timed ? 5 : 20);
		for (int i = 0; i < k; i++)
			handle(evs[i].data.ptr, evs[i].events);
	}
}

static int usage(void)
{
	fprintf(stderr, "usage: load PORT up|down|both BYTES | rtt COUNT SIZE | setup COUNT CONC | "
			"idle COUNT CONC | streams N SECS up|down\n");
	return 2;
}

static int rtt(int count, size_t size)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
		printf("result ok=0 err=connect:%s\n", strerror(errno));
		return 1;
	}
	struct timeval tv = {.tv_sec = 10};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	double *s = malloc(sizeof(double) * (size_t)count);
	int warm = count / 10 < 200 ? count / 10 : 200;
	for (int i = -warm; i < count; i++) {
		double t0 = now();
		if (send(fd, sbuf, size, MSG_NOSIGNAL) != (ssize_t)size) {
			printf("result ok=0 err=send:%s\n", strerror(errno));
			return 1;
		}
		size_t got = 0;
		while (got < size) {
			ssize_t n = recv(fd, rbuf, size - got, 0);
			if (n <= 0) {
				printf("result ok=0 err=recv:%s\n", n == 0 ? "closed" : strerror(errno));
				return 1;
			}
			got += (size_t)n;
		}
		if (i >= 0)
			s[i] = (now() - t0) * 1e6;
	}
	close(fd);
	qsort(s, (size_t)count, sizeof(double), cmp_double);
	double sum = 0;
	for (int i = 0; i < count; i++)
		sum += s[i];
	printf("result ok=1 n=%d p50=%.2f p90=%.2f p99=%.2f p999=%.2f min=%.2f mean=%.2f\n", count,
	       pct(s, count, 0.5), pct(s, count, 0.9), pct(s, count, 0.99), pct(s, count, 0.999), s[0], sum / count);
	return 0;
}

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	raise_nofile();
	if (argc < 4)
		return usage();
	port = atoi(argv[1]);
	const char *m = argv[2];
	for (size_t i = 0; i < sizeof(sbuf); i++)
		sbuf[i] = (uint8_t)(i * 7 + 3);
	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (strcmp(m, "rtt") == 0 && argc == 5)
		return rtt(atoi(argv[3]), (size_t)atoi(argv[4]));
	if (strcmp(m, "up") == 0 || strcmp(m, "down") == 0 || strcmp(m, "both") == 0) {
		mode = m[0] == 'u' ? UP : m[0] == 'd' ? DOWN : BOTH;
		target = strtoull(argv[3], NULL, 10);
		struct cx c;
		double t0 = now();
		run(&c, 1, 1, 0);
		double secs = (c.state == DONE ? c.t1 : now()) - t0;
		uint64_t bytes = mode == UP ? c.count : c.rcvd;
		printf("result ok=%d bytes=%llu secs=%.6f err=%s\n", c.state == DONE, (unsigned long long)bytes, secs,
		       first_err[0] ? first_err : "none");
		return c.state == DONE ? 0 : 1;
	}
	if ((strcmp(m, "setup") == 0 || strcmp(m, "idle") == 0) && argc == 5) {
		mode = m[0] == 's' ? SETUP : IDLE;
		int n = atoi(argv[3]), conc = atoi(argv[4]);
		struct cx *cs = calloc((size_t)n, sizeof(*cs));
		double t0 = now();
		run(cs, n, conc, 0);
		double secs = now() - t0;
		double *s = malloc(sizeof(double) * (size_t)n);
		int ok = 0;
		for (int i = 0; i < n; i++)
			if (cs[i].state == DONE)
				s[ok++] = (cs[i].t1 - cs[i].t0) * 1e6;
		double first = ok > 0 ? s[0] : 0;
		qsort(s, (size_t)ok, sizeof(double), cmp_double);
		double sum = 0;
		for (int i = 0; i < ok; i++)
			sum += s[i];
		printf("%s ok=%d failed=%d secs=%.6f rate=%.1f first=%.1f p50=%.1f p99=%.1f mean=%.1f err=%s\n",
		       mode == IDLE ? "READY" : "result", ok, failures, secs, ok / secs, first, pct(s, ok, 0.5),
		       pct(s, ok, 0.99), ok ? sum / ok : 0, first_err[0] ? first_err : "none");
		fflush(stdout);
		if (mode == IDLE) {
			char line[64];
			while (read(0, line, sizeof(line)) > 0)
				break;
		}
		return 0;
	}
	if (strcmp(m, "streams") == 0 && argc == 6) {
		int n = atoi(argv[3]);
		double secs = atof(argv[4]);
		mode = strcmp(argv[5], "up") == 0 ? UP : DOWN;
		timed = true;
		struct cx *cs = calloc((size_t)n, sizeof(*cs));
		run(cs, n, n, secs);
		double t0 = window_start, end = window_start + secs;
		uint64_t sum = 0, mn = UINT64_MAX, mx = 0;
		int ok = 0;
		for (int i = 0; i < n; i++) {
			if (cs[i].state != DONE)
				continue;
			uint64_t b = delivered(&cs[i]) - cs[i].base;
			sum += b;
			mn = b < mn ? b : mn;
			mx = b > mx ? b : mx;
			ok++;
		}
		if (ok == 0 || window_start == 0) {
			mn = 0;
			ok = 0;
			if (first_err[0] == '\0')
				snprintf(first_err, sizeof(first_err), "the_streams_never_all_flowed");
		}
		printf("result ok=%d failed=%d bytes=%llu secs=%.6f min=%llu max=%llu err=%s\n", ok, failures,
		       (unsigned long long)sum, end - t0, (unsigned long long)mn, (unsigned long long)mx,
		       first_err[0] ? first_err : "none");
		return ok == n ? 0 : 1;
	}
	return usage();
}
