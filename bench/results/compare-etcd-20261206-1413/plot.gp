set terminal png size 1000,600 noenhanced
set datafile separator ','
$throughput << EOD
1,1424.7,1175.7,929.4
16,5138.3,4097.8,3283.6
64,11339.9,6306.1,5900.1
256,23120.9,8155.6,10242.8
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
set yrange [10:265421]
set format y '%.0s%c'
set xtics rotate by -40
unset xlabel
set ylabel 'µs'
set key top left
$latency3 << EOD
put-c1,630.8,813.6,983.6,1556.5,1674.2,2002.9
put-c16,2848.8,3538.9,4628.5,7155.7,11173.9,10747.9
put-c64,5095.4,9224.2,10174.5,15777.8,28377.1,23216.1
put-c256,8929.3,28246.0,20987.9,51740.7,89260.0,132710.4
range-l,1954.8,7647.2,7008.3,4718.6,38928.4,15532.0
range-s,402.9,4673.5,1357.8,1514.5,44630.0,5472.3
txn,5283.8,20955.1,10059.8,16941.1,110362.6,32489.5
watch,2979.8,1336.3,3436.5,11354.1,10469.4,9445.4
EOD
set title 'three nodes'
plot $latency3 using 2:xtic(1) title 'nvkv p50' lc rgb '#1f77b4', '' using 3 title 'etcd p50' lc rgb '#ff7f0e', '' using 4 title 'nvkv-etcd p50' lc rgb '#2ca02c', '' using 5 title 'nvkv p99' lc rgb '#aec7e8', '' using 6 title 'etcd p99' lc rgb '#ffbb78', '' using 7 title 'nvkv-etcd p99' lc rgb '#98df8a'
unset multiplot
set output
