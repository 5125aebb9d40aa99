set terminal png size 1000,600 noenhanced
set datafile separator ','
$throughput << EOD
1,9072.9,3589.7,5357.8
16,37277.2,9478.2,12338.7
64,61262.3,14539.1,22127.5
256,88012.2,18116.8,29556.1
EOD
set output 'throughput.png'
set title 'put throughput against clients (medians)'
set xlabel 'clients (one connection per 10)'
set ylabel 'puts/s'
set logscale x 2
set logscale y
set grid
set key top left
set xtics (1, 16, 64, 256)
set xrange [0.8:320]
plot $throughput using 1:2 with linespoints lw 2 pt 7 dt 1 lc rgb '#1f77b4' title 'nvkv, one node', $throughput using 1:3 with linespoints lw 2 pt 7 dt 1 lc rgb '#ff7f0e' title 'etcd, one node', $throughput using 1:4 with linespoints lw 2 pt 7 dt 1 lc rgb '#2ca02c' title 'nvkv-etcd, one node'
unset logscale x
unset xtics
set xtics
set autoscale x
set output
set output 'latency.png'
set terminal png size 600,650 noenhanced
set multiplot layout 1,1 title 'latency percentiles, medians (µs, log scale)'
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set logscale y
set yrange [10:96141]
set format y '%.0s%c'
set xtics rotate by -40
unset xlabel
set ylabel 'µs'
set key top left
$latency1 << EOD
put-c1,102.2,247.9,155.5,274.9,842.8,495.9
put-c16,353.5,1530.9,1176.6,975.9,5685.2,2668.5
put-c64,798.2,4059.1,2711.6,3166.2,11690.0,5701.6
put-c256,2433.0,12509.2,8142.8,8863.7,45088.8,22708.2
range-l,379.4,7614.5,1706.0,1411.1,37814.3,4001.8
range-s,242.6,8699.9,1543.2,802.8,42958.8,3500.0
txn,1194.0,10575.9,3239.9,4153.3,48070.7,9355.3
watch,598.5,633.9,718.8,1848.3,4870.1,2791.4
EOD
set title 'one node'
plot $latency1 using 2:xtic(1) title 'nvkv p50' lc rgb '#1f77b4', '' using 3 title 'etcd p50' lc rgb '#ff7f0e', '' using 4 title 'nvkv-etcd p50' lc rgb '#2ca02c', '' using 5 title 'nvkv p99' lc rgb '#aec7e8', '' using 6 title 'etcd p99' lc rgb '#ffbb78', '' using 7 title 'nvkv-etcd p99' lc rgb '#98df8a'
unset multiplot
set output
