set terminal png size 1000,600 noenhanced
set datafile separator ','
$throughput << EOD
1,298.9,1718.5,282.1,642.1
16,4699.7,6091.5,1662.6,2321.5
64,8998.2,9308.6,3569.4,4615.8
256,8350.6,7185.4,5284.7,6859.7
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
plot $throughput using 1:2 with linespoints lw 2 pt 7 dt 1 lc rgb '#1f77b4' title 'nvkv, one node', $throughput using 1:3 with linespoints lw 2 pt 7 dt 1 lc rgb '#ff7f0e' title 'etcd, one node', $throughput using 1:4 with linespoints lw 2 pt 5 dt 2 lc rgb '#1f77b4' title 'nvkv, three nodes', $throughput using 1:5 with linespoints lw 2 pt 5 dt 2 lc rgb '#ff7f0e' title 'etcd, three nodes'
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
set yrange [10:295174]
set format y '%.0s%c'
set xtics rotate by -40
unset xlabel
set ylabel 'µs'
set key top left
$latency1 << EOD
put-c1,2717.7,469.0,12189.7,3467.3
put-c16,2220.0,1989.6,16580.6,16367.6
put-c64,5177.3,5611.5,28524.5,31506.4
put-c256,24756.2,28835.8,88670.2,118161.4
range-l,1540.1,7688.2,13893.6,64225.3
range-s,1256.4,7594.0,11067.4,60325.9
txn,4681.7,13729.8,33112.1,90767.4
watch,2187.3,1016.8,21577.7,21905.4
EOD
set title 'one node'
plot $latency1 using 2:xtic(1) title 'nvkv p50' lc rgb '#1f77b4', '' using 3 title 'etcd p50' lc rgb '#ff7f0e', '' using 4 title 'nvkv p99' lc rgb '#aec7e8', '' using 5 title 'etcd p99' lc rgb '#ffbb78'
$latency3 << EOD
put-c1,2457.6,1410.0,14450.7,4210.7
put-c16,7233.5,6103.0,33521.7,25542.7
put-c64,13656.1,11894.8,62619.6,53215.2
put-c256,41025.5,33652.7,147587.1,98566.1
range-l,3702.8,7004.2,32849.9,54558.7
range-s,1903.6,4497.4,4198.4,59899.9
txn,13631.5,26066.9,77725.7,127795.2
watch,8568.8,6529.0,45842.4,31031.3
EOD
set title 'three nodes'
plot $latency3 using 2:xtic(1) title 'nvkv p50' lc rgb '#1f77b4', '' using 3 title 'etcd p50' lc rgb '#ff7f0e', '' using 4 title 'nvkv p99' lc rgb '#aec7e8', '' using 5 title 'etcd p99' lc rgb '#ffbb78'
unset multiplot
set output
