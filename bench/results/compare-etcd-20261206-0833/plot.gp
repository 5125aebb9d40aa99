set terminal png size 1000,600 noenhanced
set datafile separator ','
$throughput << EOD
1,812.9,786.2,668.9
16,3728.9,2219.1,2707.9
64,8471.8,4715.9,4734.2
256,18425.4,6841.9,8280.2
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
plot $throughput using 1:2 with linespoints lw 2 pt 5 dt 2 lc rgb '#1f77b4' title 'nvkv, three nodes', $throughput using 1:3 with linespoints lw 2 pt 5 dt 2 lc rgb '#ff7f0e' title 'etcd, three nodes', $throughput using 1:4 with linespoints lw 2 pt 5 dt 2 lc rgb '#2ca02c' title 'nvkv-etcd, three nodes'
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
set yrange [10:238944]
set format y '%.0s%c'
set xtics rotate by -40
unset xlabel
set ylabel 'µs'
set key top left
$latency3 << EOD
put-c1,976.9,1057.8,1267.7,5103.6,4288.5,4956.2
put-c16,3534.8,5976.1,5623.8,11804.7,27361.3,12394.5
put-c64,6107.1,12050.4,13082.6,31326.2,37978.1,25788.4
put-c256,11345.9,33914.9,28196.9,65863.7,100859.9,65208.3
range-l,2408.4,7852.0,8626.2,5787.6,41648.1,19546.1
range-s,597.0,4747.3,2273.3,1791.0,36077.6,6844.4
txn,6840.3,21839.9,14139.4,21184.5,119472.1,86704.1
watch,3940.4,3563.5,4517.9,94371.8,18333.7,17809.4
EOD
set title 'three nodes'
plot $latency3 using 2:xtic(1) title 'nvkv p50' lc rgb '#1f77b4', '' using 3 title 'etcd p50' lc rgb '#ff7f0e', '' using 4 title 'nvkv-etcd p50' lc rgb '#2ca02c', '' using 5 title 'nvkv p99' lc rgb '#aec7e8', '' using 6 title 'etcd p99' lc rgb '#ffbb78', '' using 7 title 'nvkv-etcd p99' lc rgb '#98df8a'
unset multiplot
set output
