/* Wrappers for DPDK's static-inline functions and a few set-up helpers, so
 * Rust can call them through plain FFI. Kept small: everything here is
 * either a one-line wrapper or port set-up with DPDK's own error codes. */
#include <stdint.h>
#include <string.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_launch.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_prefetch.h>

int wf_eal_init(int argc, char **argv) { return rte_eal_init(argc, argv); }
int wf_eal_cleanup(void) { return rte_eal_cleanup(); }
int wf_errno(void) { return rte_errno; }
const char *wf_strerror(int e) { return rte_strerror(e); }
unsigned wf_socket_id(void) { return rte_socket_id(); }

uint16_t wf_port_count(void) { return rte_eth_dev_count_avail(); }

struct rte_mempool *wf_pool_create(const char *name, unsigned n, unsigned cache, uint16_t data_room) {
    return rte_pktmbuf_pool_create(name, n, cache, 0, data_room, (int)rte_socket_id());
}
void wf_pool_free(struct rte_mempool *mp) { rte_mempool_free(mp); }

int wf_port_max_rx_queues(uint16_t port) {
    struct rte_eth_dev_info info;
    int r = rte_eth_dev_info_get(port, &info);
    return r < 0 ? r : (int)info.max_rx_queues;
}

/* A symmetric RSS key (0x6d5a repeated): both directions of a flow hash alike. */
static uint8_t sym_key[40] = {
    0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a,
    0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a,
    0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a,
};

/* Configure `port` with `nq` rx queues (RSS with the symmetric key when the
 * device offers RSS and nq > 1), one tx queue, and start it.
 * Returns 0, or a negative errno; *rss_out says whether RSS is on. */
int wf_port_setup(uint16_t port, uint16_t nq, uint16_t nb_rxd, struct rte_mempool *mp, int *rss_out) {
    struct rte_eth_dev_info info;
    int r = rte_eth_dev_info_get(port, &info);
    if (r < 0) return r;
    struct rte_eth_conf conf;
    memset(&conf, 0, sizeof(conf));
    int rss = nq > 1 && info.flow_type_rss_offloads != 0;
    if (rss) {
        conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
        conf.rx_adv_conf.rss_conf.rss_key = info.hash_key_size == 40 ? sym_key : NULL;
        conf.rx_adv_conf.rss_conf.rss_key_len = info.hash_key_size == 40 ? 40 : 0;
        conf.rx_adv_conf.rss_conf.rss_hf = (RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP) & info.flow_type_rss_offloads;
    }
    *rss_out = rss;
    r = rte_eth_dev_configure(port, nq, 1, &conf);
    if (r < 0) return r;
    for (uint16_t q = 0; q < nq; q++) {
        r = rte_eth_rx_queue_setup(port, q, nb_rxd, rte_eth_dev_socket_id(port), NULL, mp);
        if (r < 0) return r;
    }
    r = rte_eth_tx_queue_setup(port, 0, 512, rte_eth_dev_socket_id(port), NULL);
    if (r < 0) return r;
    r = rte_eth_promiscuous_enable(port);
    (void)r; /* not every virtual device supports it */
    return rte_eth_dev_start(port);
}

int wf_port_stop(uint16_t port) { return rte_eth_dev_stop(port); }
int wf_port_close(uint16_t port) { return rte_eth_dev_close(port); }

/* out: ipackets, imissed, ierrors, rx_nombuf, then per-queue ipackets[nq]. */
int wf_port_stats(uint16_t port, uint64_t *out, uint16_t nq) {
    struct rte_eth_stats s;
    int r = rte_eth_stats_get(port, &s);
    if (r < 0) return r;
    out[0] = s.ipackets;
    out[1] = s.imissed;
    out[2] = s.ierrors;
    out[3] = s.rx_nombuf;
    for (uint16_t q = 0; q < nq && q < RTE_ETHDEV_QUEUE_STAT_CNTRS; q++) out[4 + q] = s.q_ipackets[q];
    return 0;
}

void wf_mbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }

/* One call per burst instead of four per packet: receive up to n packets,
 * prefetch each one's first cache line of data, and report its data pointer,
 * first-segment length and total length. */
uint16_t wf_rx_burst_info(uint16_t port, uint16_t q, struct rte_mbuf **pkts, uint16_t n,
                          const uint8_t **data, uint16_t *data_len, uint32_t *pkt_len) {
    uint16_t got = rte_eth_rx_burst(port, q, pkts, n);
    /* Start every header load at once, then read them. */
    for (uint16_t i = 0; i < got; i++) rte_prefetch0(pkts[i]);
    for (uint16_t i = 0; i < got; i++) {
        const uint8_t *d = rte_pktmbuf_mtod(pkts[i], const uint8_t *);
        rte_prefetch0(d);
        data[i] = d;
        data_len[i] = rte_pktmbuf_data_len(pkts[i]);
        pkt_len[i] = rte_pktmbuf_pkt_len(pkts[i]);
    }
    return got;
}
void wf_mbuf_free_bulk(struct rte_mbuf **pkts, unsigned n) { rte_pktmbuf_free_bulk(pkts, n); }

/* A new single-segment mbuf holding a copy of `len` bytes, or NULL. */
struct rte_mbuf *wf_mbuf_from(struct rte_mempool *mp, const uint8_t *data, uint16_t len) {
    struct rte_mbuf *m = rte_pktmbuf_alloc(mp);
    if (m == NULL) return NULL;
    char *p = rte_pktmbuf_append(m, len);
    if (p == NULL) {
        rte_pktmbuf_free(m);
        return NULL;
    }
    memcpy(p, data, len);
    return m;
}

uint16_t wf_tx_burst(uint16_t port, uint16_t q, struct rte_mbuf **pkts, uint16_t n) {
    return rte_eth_tx_burst(port, q, pkts, n);
}
void wf_mbuf_refcnt_add(struct rte_mbuf *m, int16_t v) { rte_mbuf_refcnt_update(m, v); }


unsigned wf_lcore_id(void) { return rte_lcore_id(); }
unsigned wf_next_worker(unsigned after) { return rte_get_next_lcore(after, 1, 0); }
unsigned wf_max_lcore(void) { return RTE_MAX_LCORE; }
int wf_remote_launch(int (*f)(void *), void *arg, unsigned lcore) { return rte_eal_remote_launch(f, arg, lcore); }
int wf_wait_lcore(unsigned lcore) { return rte_eal_wait_lcore(lcore); }
