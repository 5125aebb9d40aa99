set terminal png size 1000,600 noenhanced
set datafile separator ','
$throughput << EOD
1,5079.3,1602.7,2141.3
16,19493.6,7677.3,10136.9
64,37780.5,11675.9,17740.4
256,61302.6,13595.3,22192.9
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
set yrange [10:109511]
set format y '%.0s%c'
set xtics rotate by -40
unset xlabel
set ylabel 'µs'
set key top left
$latency1 << EOD
put-c1,170.2,476.7,317.4,679.4,3192.8,2814.0
put-c16,576.5,1794.0,1317.9,4028.4,7381.0,5292.0
put-c64,1281.0,4890.6,3270.7,5464.1,15433.7,9576.4
put-c256,3358.7,16891.9,10854.4,16179.2,54755.3,29917.2
range-l,414.7,7872.5,2101.2,1669.1,38961.2,4636.7
range-s,313.9,7376.9,1890.3,1091.6,35455.0,4190.2
txn,1352.7,10739.7,3739.6,4259.8,51380.2,9027.6
watch,651.8,688.1,747.0,2490.4,8446.0,2508.8
EOD
set title 'one node'
plot $latency1 using 2:xtic(1) title 'nvkv p50' lc rgb '#1f77b4', '' using 3 title 'etcd p50' lc rgb '#ff7f0e', '' using 4 title 'nvkv-etcd p50' lc rgb '#2ca02c', '' using 5 title 'nvkv p99' lc rgb '#aec7e8', '' using 6 title 'etcd p99' lc rgb '#ffbb78', '' using 7 title 'nvkv-etcd p99' lc rgb '#98df8a'
unset multiplot
set output
