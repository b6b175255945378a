// pgxpoolbench — pgxpool (jackc/pgx v4, Debian's golang-github-jackc-pgx-v4-dev) in the scenarios
// of `pqxxpool bench`: the Go twin of bench/hikari/HikariBench.java, so pqxxpool, the naive pool,
// HikariCP and pgxpool are measured side by side in one sitting (bench/hikari.sh runs all four).
//
// Same rules as HikariBench and tools/pqxxpool/bench.cpp: a pool of 4 kept full (MinConns =
// MaxConns = 4, all four opened by ConnectConfig), every acquire timed by two time.Now() reads
// (monotonic clock; recorded into the same log-linear histogram as HikariBench), runs interleaved
// case by case, medians of the runs; one JSON line per case with ops/s, acquire p50/p99/max and
// the per-thread ops min/max, in HikariBench's shape ("pool":"pgxpool-VERSION"). Scenarios: cycle
// (Acquire + Release, no query) at 1 and 16 goroutines, select1 ("SELECT 1") at 4 and 16,
// contended ("SELECT pg_sleep(0.001)") at 16. One goroutine per thread of the other benchmarks;
// GOMAXPROCS is Go's default (the number of CPUs). The query goes through Conn.Query and every
// row is read (rows.Next), as HikariBench reads its ResultSet; pgx's default statement cache
// prepares it once per connection.
//
// Usage: pgxpoolbench CONNSTRING [SECONDS_PER_RUN] [RUNS]
// CONNSTRING is a pgx/libpq key=value string or URL without the password; the password comes from
// PGPASSWORD (read by pgconn), so it never appears on a command line and is never printed.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/bits"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v4/pgxpool"
)

// pgxVersion is set at build time (-ldflags "-X main.pgxVersion=4.15.0") from the Debian package.
var pgxVersion = "v4"

// histogram: 64 powers of two × 16 linear sub-buckets, about 6 % resolution (HikariBench's).
type histogram struct {
	counts [64 * 16]int64
	max    int64
}

func (h *histogram) record(ns int64) {
	if ns < 1 {
		ns = 1
	}
	if ns > h.max {
		h.max = ns
	}
	major := 63 - bits.LeadingZeros64(uint64(ns))
	var minor int
	if major >= 4 {
		minor = int((uint64(ns) >> uint(major-4)) & 15)
	} else {
		minor = int(ns & 15)
	}
	h.counts[major*16+minor]++
}

func (h *histogram) add(o *histogram) {
	for i := range h.counts {
		h.counts[i] += o.counts[i]
	}
	if o.max > h.max {
		h.max = o.max
	}
}

func (h *histogram) quantile(q float64) int64 {
	var total int64
	for _, c := range h.counts {
		total += c
	}
	if total == 0 {
		return 0
	}
	rank := int64(math.Ceil(q * float64(total)))
	var seen int64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			major, minor := i/16, int64(i%16)
			upper := minor + 1
			if major >= 4 {
				upper = (16 + minor + 1) << uint(major-4)
			}
			if upper < h.max {
				return upper
			}
			return h.max
		}
	}
	return h.max
}

type result struct {
	opsPerSecond                float64
	p50, p99, max, minTh, maxTh int64
}

func run(pool *pgxpool.Pool, threads int, query string, seconds float64) (result, error) {
	ctx := context.Background()
	var stop int32
	ops := make([]int64, threads)
	hist := make([]histogram, threads)
	var ready, done sync.WaitGroup
	goCh := make(chan struct{})
	var failMu sync.Mutex
	var failure error
	ready.Add(threads)
	done.Add(threads)
	for t := 0; t < threads; t++ {
		go func(me int) {
			defer done.Done()
			ready.Done()
			<-goCh
			h := &hist[me]
			var n int64
			for atomic.LoadInt32(&stop) == 0 {
				t0 := time.Now()
				c, err := pool.Acquire(ctx)
				if err == nil {
					h.record(int64(time.Since(t0)))
					if query != "" {
						err = readAll(ctx, c, query)
					}
					c.Release()
				}
				if err != nil {
					failMu.Lock()
					if failure == nil {
						failure = err
					}
					failMu.Unlock()
					return
				}
				n++
			}
			ops[me] = n
		}(t)
	}
	ready.Wait()
	start := time.Now()
	close(goCh)
	time.Sleep(time.Duration(seconds * float64(time.Second)))
	atomic.StoreInt32(&stop, 1)
	done.Wait()
	elapsed := time.Since(start).Seconds()
	if failure != nil {
		return result{}, failure
	}
	var all histogram
	var total int64
	r := result{minTh: math.MaxInt64}
	for t := 0; t < threads; t++ {
		all.add(&hist[t])
		total += ops[t]
		if ops[t] < r.minTh {
			r.minTh = ops[t]
		}
		if ops[t] > r.maxTh {
			r.maxTh = ops[t]
		}
	}
	r.opsPerSecond = float64(total) / elapsed
	r.p50 = all.quantile(0.50)
	r.p99 = all.quantile(0.99)
	r.max = all.max
	return r, nil
}

// readAll runs query and reads every row, like HikariBench's executeQuery + while (r.next()).
func readAll(ctx context.Context, c *pgxpool.Conn, query string) error {
	rows, err := c.Query(ctx, query)
	if err != nil {
		return err
	}
	for rows.Next() { // read the row
	}
	rows.Close()
	return rows.Err()
}

// median: the upper median for an even count, as HikariBench's c[c.length / 2].
func median(v []float64) float64 {
	c := append([]float64(nil), v...)
	sort.Float64s(c)
	return c[len(c)/2]
}

func die(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "pgxpoolbench: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: pgxpoolbench CONNSTRING [SECONDS_PER_RUN] [RUNS]  (password in PGPASSWORD)")
		os.Exit(2)
	}
	seconds, runs := 3.0, 3
	var err error
	if len(os.Args) > 2 {
		if seconds, err = strconv.ParseFloat(os.Args[2], 64); err != nil || seconds <= 0 {
			die("bad SECONDS_PER_RUN %q", os.Args[2])
		}
	}
	if len(os.Args) > 3 {
		if runs, err = strconv.Atoi(os.Args[3]); err != nil || runs < 1 {
			die("bad RUNS %q", os.Args[3])
		}
	}
	cfg, err := pgxpool.ParseConfig(os.Args[1])
	if err != nil {
		die("connection string: %v", err)
	}
	cfg.MaxConns = 4
	cfg.MinConns = 4
	cfg.MaxConnLifetime = 55 * time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // connectionTimeout
	pool, err := pgxpool.ConnectConfig(ctx, cfg)
	cancel()
	if err != nil {
		die("connect: %v", err)
	}
	defer pool.Close()

	cases := []struct {
		name    string
		threads int
		query   string
	}{
		{"cycle_t1", 1, ""}, {"cycle_t16", 16, ""},
		{"select1_t4", 4, "SELECT 1"}, {"select1_t16", 16, "SELECT 1"},
		{"contended_t16", 16, "SELECT pg_sleep(0.001)"},
	}
	// Warm up the pool, the statement caches and the heap, as HikariBench warms up its JIT.
	if _, err := run(pool, 4, "SELECT 1", 2.0); err != nil {
		die("warm-up: %v", err)
	}
	if _, err := run(pool, 16, "", 2.0); err != nil {
		die("warm-up: %v", err)
	}
	for _, c := range cases {
		opsRuns := make([]float64, runs)
		p50, p99, max := make([]float64, runs), make([]float64, runs), make([]float64, runs)
		minT, maxT := make([]float64, runs), make([]float64, runs)
		for i := 0; i < runs; i++ {
			r, err := run(pool, c.threads, c.query, seconds)
			if err != nil {
				pool.Close()
				die("%s: %v", c.name, err)
			}
			opsRuns[i], p50[i], p99[i], max[i] = r.opsPerSecond, float64(r.p50), float64(r.p99), float64(r.max)
			minT[i], maxT[i] = float64(r.minTh), float64(r.maxTh)
			fmt.Fprintf(os.Stderr, "pgxpool: %-14s run %d/%d %12.0f ops/s  p50 %d ns  p99 %d ns  max %d ns  threads %d/%d\n",
				c.name, i+1, runs, r.opsPerSecond, r.p50, r.p99, r.max, r.minTh, r.maxTh)
		}
		m := 0 // the run with the median throughput supplies the per-thread spread
		med := median(opsRuns)
		for i := 0; i < runs; i++ {
			if opsRuns[i] == med {
				m = i
			}
		}
		ratio := 0.0
		if maxT[m] > 0 {
			ratio = minT[m] / maxT[m]
		}
		query, _ := json.Marshal(c.query)
		fmt.Printf("{\"type\":\"result\",\"case\":\"%s\",\"pool\":\"pgxpool-%s\",\"threads\":%d,\"pool_size\":4,"+
			"\"query\":%s,\"runs\":%d,\"ops_per_s\":%.0f,\"acquire_p50_ms\":%.6g,\"acquire_p99_ms\":%.6g,"+
			"\"acquire_max_ms\":%.6g,\"per_thread_ops_min\":%.0f,\"per_thread_ops_max\":%.0f,"+
			"\"per_thread_ops_ratio\":%.4g}\n",
			c.name, pgxVersion, c.threads, query, runs, med, median(p50)/1e6, median(p99)/1e6,
			median(max)/1e6, minT[m], maxT[m], ratio)
	}
}
