%% Hessian eigenvalues along training with hessiancore
% Trains a small classifier and records, after every epoch, the extreme eigenvalues of the Hessian of
% the loss (dlhessianEigs, matrix-free Lanczos with certified residuals) and its trace
% (dlhessianTrace): sharpness (largest eigenvalue), negative curvature (smallest), total curvature.
% The training step here is a damped Newton step (dlnewtonUpdate); with the Deep Learning Toolbox
% any step works the same, e.g. dlfeval + dlgradient + adamupdate.
% Runs in MATLAB and, with the test doubles of tests/octave on the path, in GNU Octave.

rng(1);
numClasses = 3;
numObservations = 60;
labels = randi(numClasses, 1, numObservations);
centers = [2 -1 0; 0 2 -2];
features = centers(:, labels) + 0.8 * randn(2, numObservations);
targets = zeros(numClasses, numObservations);
targets(sub2ind(size(targets), labels, 1:numObservations)) = 1;
X = dlarray(features, 'CB');
T = dlarray(targets, 'CB');

net = dlnetwork([featureInputLayer(2), fullyConnectedLayer(6), tanhLayer, ...
                 fullyConnectedLayer(numClasses), softmaxLayer]);

numEpochs = 6;
numEigenvalues = 2;
largest = zeros(numEpochs, 1);
smallest = zeros(numEpochs, 1);
traces = zeros(numEpochs, 1);
losses = zeros(numEpochs, 1);
for epoch = 1:numEpochs
    [net, info] = dlnewtonUpdate(net, X, T, 'Loss', 'crossentropy', 'Damping', 0.1, 'LearnRate', 0.5);
    [~, D, eigInfo] = dlhessianEigs(net, X, T, numEigenvalues, 'Which', 'bothends', 'Loss', 'crossentropy');
    lambda = diag(D);
    largest(epoch) = lambda(1);  % outermost first, as eigs
    smallest(epoch) = lambda(end);
    traces(epoch) = dlhessianTrace(net, X, T, 'Loss', 'crossentropy', 'NumMatvecs', 30, 'Seed', epoch);
    losses(epoch) = info.LossAfter;
    fprintf('epoch %d  loss %.4f  lambda_min %+.3e  lambda_max %.3e  trace %.3e  (max residual %.1e)\n', ...
            epoch, losses(epoch), smallest(epoch), largest(epoch), traces(epoch), max(eigInfo.Residuals));
end

if ~exist('OCTAVE_VERSION', 'builtin') && usejava('desktop')
    figure;
    plot(1:numEpochs, largest, '-o', 1:numEpochs, smallest, '-s');
    xlabel('epoch');
    ylabel('Hessian eigenvalue');
    legend('largest', 'smallest');
    title('Curvature along training');
end
