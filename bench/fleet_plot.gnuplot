# fleet_plot.gnuplot — docs/img/fleet_reconnects.png from the fleet simulation's CSVs
# (second,connects,rejected_53400), one panel per scenario (a, b, c: real pool cores) and one for
# today's default, initial_lifetime_spread 0.9 (real pool cores), log y.
#
#   gnuplot -e "dir='bench/results'; out='docs/img/fleet_reconnects.png'" bench/fleet_plot.gnuplot
#
# bench/fleet.sh runs it after the simulations.

if (!exists("dir")) dir = 'bench/results'
if (!exists("out")) out = 'docs/img/fleet_reconnects.png'
if (!exists("tag")) tag = '1,000 instances x pool of 10 against one DSQL cluster (100 new connections/s, burst 1,000), real pool cores on a fake clock'

set terminal pngcairo size 1400,1300 font 'DejaVu Sans,10'
set output out
set datafile separator ','
set key top right opaque box
set logscale y
set yrange [0.8:2000]
set ytics ('1' 1, '10' 10, '100' 100, '1000' 1000)
set xrange [0:180]
set xtics 0,15,180
set mxtics 3
set grid xtics ytics mxtics lc rgb '#dddddd'
set style line 1 lc rgb '#1f77b4' lw 1
set style line 2 lc rgb '#d62728' lw 1
set style line 3 lc rgb '#2ca02c' lw 1
set style line 4 lc rgb '#9467bd' lw 1
set style line 9 lc rgb '#444444' dt 2 lw 1.5
set ylabel 'connects per second'
# Zero counts have no place on a log axis: left out (the gaps are seconds without a connect).
pos(x) = x > 0 ? x : 1/0

set multiplot layout 4,1 title tag font ',12'
set label 1 'cluster limit 100/s' at 20,130 tc rgb '#444444'
set title '(a) started together, lifetime\_jitter 0.1, before initial\_lifetime\_spread'
unset xlabel
plot dir.'/fleet_a.csv' every ::1 using ($1/60.0):(pos($2)) with impulses ls 1 title 'connects/s', \
     100 with lines ls 9 notitle
set title '(b) started together, lifetime\_jitter 0, before initial\_lifetime\_spread'
plot dir.'/fleet_b.csv' every ::1 using ($1/60.0):(pos($2)) with impulses ls 2 title 'connects/s', \
     100 with lines ls 9 notitle
set title '(c) as (a), every pool closed and rebuilt at 90 min'
plot dir.'/fleet_c.csv' every ::1 using ($1/60.0):(pos($2)) with impulses ls 3 title 'connects/s', \
     100 with lines ls 9 notitle
set title "today's defaults: as (a) with initial\\_lifetime\\_spread 0.9 (a pool's first 10 connections live U(5.5, 55] min)"
set xlabel 'minutes since the fleet started'
plot dir.'/fleet_a_spread.csv' every ::1 using ($1/60.0):(pos($2)) with impulses ls 4 title 'connects/s', \
     100 with lines ls 9 notitle
unset multiplot
