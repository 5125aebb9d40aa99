set terminal png size 1000,600 noenhanced
set datafile separator ','
$throughput << EOD
1,9668.1,4086.5,5769.1,1392.0,1507.7,1263.2
16,46646.6,13308.1,23439.3,5922.7,5274.6,3346.5
64,95026.7,20887.6,37017.9,11353.8,6128.7,7625.1
256,136911.3,24670.6,52984.4,30476.9,9526.8,13139.1
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
plot $throughput using 1:2 with linespoints lw 2 pt 7 dt 1 lc rgb '#1f77b4' title 'nvkv, one node', $throughput using 1:3 with linespoints lw 2 pt 7 dt 1 lc rgb '#ff7f0e' title 'etcd, one node', $throughput using 1:4 with linespoints lw 2 pt 7 dt 1 lc rgb '#2ca02c' title 'nvkv-etcd, one node', $throughput using 1:5 with linespoints lw 2 pt 5 dt 2 lc rgb '#1f77b4' title 'nvkv, three nodes', $throughput using 1:6 with linespoints lw 2 pt 5 dt 2 lc rgb '#ff7f0e' title 'etcd, three nodes', $throughput using 1:7 with linespoints lw 2 pt 5 dt 2 lc rgb '#2ca02c' title 'nvkv-etcd, three nodes'
unset logscale x
unset xtics
set xtics
set autoscale x
set output
set output 'latency.png'
set terminal png size 1200,650 noenhanced
set multiplot layout 1,2 title 'latency percentiles, medians (µs, log scale)'
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set logscale y
set yrange [10:195166]
set format y '%.0s%c'
set xtics rotate by -40
unset xlabel
set ylabel 'µs'
set key top left
$latency1 << EOD
put-c1,79.9,183.3,124.3,448.5,1051.6,618.0
put-c16,281.6,1001.0,589.8,886.8,3921.9,1695.7
put-c64,537.1,2789.4,1559.6,2179.1,9125.9,4296.7
put-c256,1570.8,9207.8,4476.9,5816.3,31670.3,11673.6
range-l,242.9,5378.0,1042.9,937.5,23773.2,2566.1
range-s,177.3,5734.4,973.8,695.3,26083.3,2388.0
txn,911.4,7884.8,2283.5,3125.2,35553.3,6033.4
watch,490.5,544.8,512.0,1348.6,2406.4,1597.4
EOD
set title 'one node'
plot $latency1 using 2:xtic(1) title 'nvkv p50' lc rgb '#1f77b4', '' using 3 title 'etcd p50' lc rgb '#ff7f0e', '' using 4 title 'nvkv-etcd p50' lc rgb '#2ca02c', '' using 5 title 'nvkv p99' lc rgb '#aec7e8', '' using 6 title 'etcd p99' lc rgb '#ffbb78', '' using 7 title 'nvkv-etcd p99' lc rgb '#98df8a'
$latency3 << EOD
put-c1,682.5,609.3,733.2,1412.1,1681.4,1639.4
put-c16,2291.7,2674.7,4055.0,7422.0,9961.5,14475.3
put-c64,4448.3,8814.6,7921.7,9723.9,30670.8,19202.0
put-c256,6987.8,24035.3,17186.8,54526.0,79757.3,66715.6
range-l,1715.2,6033.4,5472.3,4866.0,32686.1,13402.1
range-s,353.0,3924.0,1020.9,1181.7,31883.3,4812.8
txn,4175.9,18645.0,8814.6,9748.5,97583.1,51314.7
watch,2986.0,1180.7,3676.2,7004.2,5070.8,10862.6
EOD
set title 'three nodes'
plot $latency3 using 2:xtic(1) title 'nvkv p50' lc rgb '#1f77b4', '' using 3 title 'etcd p50' lc rgb '#ff7f0e', '' using 4 title 'nvkv-etcd p50' lc rgb '#2ca02c', '' using 5 title 'nvkv p99' lc rgb '#aec7e8', '' using 6 title 'etcd p99' lc rgb '#ffbb78', '' using 7 title 'nvkv-etcd p99' lc rgb '#98df8a'
unset multiplot
set output
